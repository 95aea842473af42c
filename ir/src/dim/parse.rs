//! Reading dimensions back from text (the syntax [`Dim`]'s `Display` prints).
//!
//! ```text
//! sum     := product (('+' | '-') product)*
//! product := unary (('*' | '//' | '%') unary)*
//! unary   := '-' unary | primary
//! primary := integer | symbol | ('min' | 'max') '(' sum ',' sum ')' | '(' sum ')'
//! ```

use super::Dim;

/// A dimension expression that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse dimension `{text}` at column {column}: {message}")]
pub struct DimParseError {
    /// The whole text.
    pub text: String,
    /// 1-based column of the problem.
    pub column: usize,
    /// What was wrong.
    pub message: String,
}

impl Dim {
    /// Parses a dimension expression such as `seq + past`, `2*seq // 3` or `min(seq, 128)`.
    pub fn parse(text: &str) -> Result<Dim, DimParseError> {
        let mut p = Parser {
            text,
            bytes: text.as_bytes(),
            pos: 0,
        };
        let d = p.sum()?;
        p.skip_ws();
        if p.pos != p.bytes.len() {
            return Err(p.error("unexpected trailing text"));
        }
        Ok(d)
    }
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, message: &str) -> DimParseError {
        DimParseError {
            text: self.text.to_string(),
            column: self.pos + 1,
            message: message.to_string(),
        }
    }

    fn skip_ws(&mut self) {
        while self.pos < self.bytes.len() && self.bytes[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.bytes[self.pos..].starts_with(token.as_bytes()) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn sum(&mut self) -> Result<Dim, DimParseError> {
        let mut acc = self.product()?;
        loop {
            if self.eat("+") {
                acc = acc + self.product()?;
            } else if self.eat("-") {
                acc = acc - self.product()?;
            } else {
                return Ok(acc);
            }
        }
    }

    fn product(&mut self) -> Result<Dim, DimParseError> {
        let mut acc = self.unary()?;
        loop {
            if self.eat("//") {
                acc = acc.floor_div(&self.unary()?);
            } else if self.eat("*") {
                acc = acc * self.unary()?;
            } else if self.eat("%") {
                acc = acc.modulo(&self.unary()?);
            } else {
                return Ok(acc);
            }
        }
    }

    fn unary(&mut self) -> Result<Dim, DimParseError> {
        if self.eat("-") {
            return Ok(-self.unary()?);
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Dim, DimParseError> {
        self.skip_ws();
        let start = self.pos;
        let Some(&c) = self.bytes.get(self.pos) else {
            return Err(self.error("expected a number, a symbol or `(`"));
        };
        if c == b'(' {
            self.pos += 1;
            let d = self.sum()?;
            if !self.eat(")") {
                return Err(self.error("expected `)`"));
            }
            return Ok(d);
        }
        if c.is_ascii_digit() {
            while self.pos < self.bytes.len() && self.bytes[self.pos].is_ascii_digit() {
                self.pos += 1;
            }
            let digits = &self.text[start..self.pos];
            return digits.parse::<i64>().map(Dim::constant).map_err(|_| {
                self.pos = start;
                self.error("integer too large")
            });
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while self.pos < self.bytes.len()
                && (self.bytes[self.pos].is_ascii_alphanumeric() || self.bytes[self.pos] == b'_')
            {
                self.pos += 1;
            }
            let name = &self.text[start..self.pos];
            if name == "min" || name == "max" {
                let save = self.pos;
                if self.eat("(") {
                    let a = self.sum()?;
                    if !self.eat(",") {
                        return Err(self.error("expected `,`"));
                    }
                    let b = self.sum()?;
                    if !self.eat(")") {
                        return Err(self.error("expected `)`"));
                    }
                    return Ok(if name == "min" {
                        a.minimum(&b)
                    } else {
                        a.maximum(&b)
                    });
                }
                self.pos = save;
            }
            return Ok(Dim::symbol(name));
        }
        Err(self.error("expected a number, a symbol or `(`"))
    }
}
