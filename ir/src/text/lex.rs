//! A cursor over one line of text with the scanning primitives the parser needs.
//!
//! Everything here works on byte offsets into the line (always on char boundaries) and never
//! recurses, so no input can overflow the stack.

use super::{ParseError, ParseErrorKind};
use crate::dim::Dim;

/// Deepest parenthesis nesting (or run of unary minus signs) accepted in a dimension
/// expression; the dimension parser recurses once per level.
const MAX_DIM_NESTING: usize = 64;

/// A position in one line of the input.
pub(super) struct Cursor<'a> {
    /// The line, without its line terminator.
    pub line: &'a str,
    /// 1-based line number.
    pub line_no: usize,
    /// Byte offset of the next character.
    pub pos: usize,
}

/// The 1-based column (in characters) of byte offset `byte` in `line`.
pub(super) fn column_of(line: &str, byte: usize) -> usize {
    line.char_indices().take_while(|(i, _)| *i < byte).count() + 1
}

impl<'a> Cursor<'a> {
    pub fn new(line: &'a str, line_no: usize) -> Self {
        Cursor {
            line,
            line_no,
            pos: 0,
        }
    }

    /// An error at byte offset `at` of this line.
    pub fn error(&self, at: usize, kind: ParseErrorKind) -> ParseError {
        ParseError {
            line: self.line_no,
            column: column_of(self.line, at),
            kind,
        }
    }

    /// A syntax error at byte offset `at`.
    pub fn syntax(&self, at: usize, message: impl Into<String>) -> ParseError {
        self.error(at, ParseErrorKind::Syntax(message.into()))
    }

    /// The rest of the line.
    pub fn rest(&self) -> &'a str {
        &self.line[self.pos..]
    }

    pub fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    pub fn skip_ws(&mut self) {
        let rest = self.rest();
        let trimmed = rest.trim_start();
        self.pos += rest.len() - trimmed.len();
    }

    /// Skips whitespace; true if nothing but a comment is left.
    pub fn at_end(&mut self) -> bool {
        self.skip_ws();
        matches!(self.peek(), None | Some('#'))
    }

    /// Skips whitespace and consumes `c` if it comes next.
    pub fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    /// Skips whitespace and consumes `c`, or fails with "expected {what}".
    pub fn expect(&mut self, c: char, what: &str) -> Result<usize, ParseError> {
        self.skip_ws();
        let at = self.pos;
        if self.eat(c) {
            Ok(at)
        } else {
            Err(self.syntax(at, format!("expected {what}, found {}", self.found())))
        }
    }

    /// A short description of what comes next, for error messages.
    pub fn found(&self) -> String {
        let rest = self.rest();
        if rest.is_empty() || rest.starts_with('#') {
            return "the end of the line".into();
        }
        let word: String = rest
            .chars()
            .take_while(|c| !c.is_whitespace())
            .take(20)
            .collect();
        format!("`{word}`")
    }

    /// Skips whitespace and reads `[A-Za-z_][A-Za-z0-9_.]*` (op names contain dots).
    pub fn ident(&mut self) -> Option<(usize, &'a str)> {
        self.skip_ws();
        let start = self.pos;
        let rest = self.rest();
        if !rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            return None;
        }
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(rest.len());
        self.pos += len;
        Some((start, &rest[..len]))
    }

    /// Skips whitespace and reads a run of characters up to whitespace, `:`, `#`, or end of
    /// line (possibly empty).
    pub fn word(&mut self) -> (usize, &'a str) {
        self.skip_ws();
        let start = self.pos;
        let rest = self.rest();
        let len = rest
            .find(|c: char| c.is_whitespace() || c == ':' || c == '#')
            .unwrap_or(rest.len());
        self.pos += len;
        (start, &rest[..len])
    }

    /// Skips whitespace and reads `%N`.
    pub fn node_ref(&mut self) -> Result<(usize, u32), ParseError> {
        let at = self.expect('%', "a node reference `%N`")?;
        let rest = self.rest();
        let len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if len == 0 {
            return Err(self.syntax(at, "expected a node number after `%`"));
        }
        let id = rest[..len]
            .parse::<u32>()
            .map_err(|_| self.syntax(at, format!("node id %{} is too large", &rest[..len])))?;
        self.pos += len;
        Ok((at, id))
    }

    /// Skips whitespace and reads a quoted string with escapes: `\\`, `\"`, `\n`, `\r`, `\t`,
    /// `\0` and `\u{HEX}`.
    pub fn string(&mut self, what: &str) -> Result<(usize, String), ParseError> {
        self.skip_ws();
        let open = self.pos;
        if self.peek() != Some('"') {
            return Err(self.syntax(open, format!("expected {what}, found {}", self.found())));
        }
        let mut out = String::new();
        let mut chars = self.line[open + 1..].char_indices();
        while let Some((i, c)) = chars.next() {
            let at = open + 1 + i;
            match c {
                '"' => {
                    self.pos = at + 1;
                    return Ok((open, out));
                }
                '\\' => {
                    let Some((_, e)) = chars.next() else {
                        break;
                    };
                    out.push(match e {
                        '\\' => '\\',
                        '"' => '"',
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        '0' => '\0',
                        'u' => self.unicode_escape(at, &mut chars)?,
                        other => {
                            return Err(
                                self.syntax(at, format!("unknown escape `\\{other}` in string"))
                            )
                        }
                    });
                }
                c => out.push(c),
            }
        }
        Err(self.syntax(open, "unterminated string"))
    }

    /// The rest of a `\u{HEX}` escape whose backslash is at `at`.
    fn unicode_escape(
        &self,
        at: usize,
        chars: &mut std::str::CharIndices<'_>,
    ) -> Result<char, ParseError> {
        let bad = || self.syntax(at, "bad unicode escape: expected `\\u{HEX}`");
        if chars.next().map(|(_, c)| c) != Some('{') {
            return Err(bad());
        }
        let mut hex = String::new();
        loop {
            match chars.next() {
                Some((_, '}')) => break,
                Some((_, c)) if c.is_ascii_hexdigit() && hex.len() < 6 => hex.push(c),
                _ => return Err(bad()),
            }
        }
        u32::from_str_radix(&hex, 16)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(bad)
    }

    /// Skips whitespace and reads a bracketed group starting with `[` or `(` up to its
    /// matching closer (nested `[]` and `()` must balance). Returns the group's byte offset
    /// and its text, delimiters included. A `#` inside a group ends the line as usual.
    pub fn group(&mut self) -> Result<(usize, &'a str), ParseError> {
        self.skip_ws();
        let start = self.pos;
        let mut stack: Vec<(char, usize)> = Vec::new();
        for (i, c) in self.rest().char_indices() {
            let at = start + i;
            match c {
                '[' => stack.push((']', at)),
                '(' => stack.push((')', at)),
                ']' | ')' => match stack.pop() {
                    Some((want, _)) if want == c => {
                        if stack.is_empty() {
                            self.pos = at + 1;
                            return Ok((start, &self.line[start..at + 1]));
                        }
                    }
                    Some((want, _)) => {
                        return Err(self.syntax(at, format!("expected `{want}`, found `{c}`")))
                    }
                    None => return Err(self.syntax(at, format!("unexpected `{c}`"))),
                },
                '#' => break,
                _ if stack.is_empty() => {
                    return Err(self.syntax(at, format!("expected `[` or `(`, found `{c}`")))
                }
                _ => {}
            }
        }
        match stack.first() {
            Some((want, open)) => {
                let opener = if *want == ']' { '[' } else { '(' };
                Err(self.syntax(*open, format!("unclosed `{opener}` (expected `{want}`)")))
            }
            None => Err(self.syntax(start, "expected `[` or `(`, found the end of the line")),
        }
    }
}

/// Splits `text` (at byte offset `base` of the line) on commas outside brackets and
/// parentheses. Returns each piece with its byte offset, whitespace trimmed. An empty or
/// all-blank `text` gives no pieces.
pub(super) fn split_top_level(text: &str, base: usize) -> Vec<(usize, &str)> {
    if text.trim().is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(trimmed(text, base, start, i));
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(trimmed(text, base, start, text.len()));
    out
}

fn trimmed(text: &str, base: usize, start: usize, end: usize) -> (usize, &str) {
    let piece = &text[start..end];
    let lead = piece.len() - piece.trim_start().len();
    (base + start + lead, piece.trim())
}

/// The inside of a group returned by [`Cursor::group`] with its offset.
pub(super) fn inner(at: usize, group: &str) -> (usize, &str) {
    (at + 1, &group[1..group.len() - 1])
}

/// Parses a dimension expression at byte offset `at` of the cursor's line.
pub(super) fn parse_dim(c: &Cursor<'_>, at: usize, text: &str) -> Result<Dim, ParseError> {
    let bad = |offset: usize, message: String| {
        c.error(
            at + offset,
            ParseErrorKind::BadDim {
                text: text.to_string(),
                message,
            },
        )
    };
    // Guard the recursive dimension parser against pathological nesting.
    let (mut depth, mut minus_run) = (0usize, 0usize);
    for (i, ch) in text.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            '-' => minus_run += 1,
            _ if ch.is_whitespace() => {}
            _ => minus_run = 0,
        }
        if depth > MAX_DIM_NESTING || minus_run > MAX_DIM_NESTING {
            return Err(bad(i, "expression nested too deeply".into()));
        }
    }
    Dim::parse(text).map_err(|e| {
        let offset = e.column.saturating_sub(1).min(text.len());
        bad(offset, e.message)
    })
}
