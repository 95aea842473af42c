//! Printing dimensions in the syntax [`Dim::parse`] reads back: `seq + past`, `2*seq - 1`,
//! `seq // 2`, `(seq + 1) % 4`, `min(seq, 128)`.

use super::{Atom, Dim, Monomial};
use std::fmt;

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terms.is_empty() {
            return f.write_str("0");
        }
        // Symbolic terms first, the constant last: `seq + 1` rather than `1 + seq`.
        let mut ordered: Vec<&(Monomial, i64)> =
            self.terms.iter().filter(|(m, _)| !m.0.is_empty()).collect();
        ordered.extend(self.terms.iter().filter(|(m, _)| m.0.is_empty()));
        for (i, (m, c)) in ordered.iter().enumerate() {
            let (neg, mag) = (*c < 0, c.unsigned_abs());
            match (i, neg) {
                (0, true) => f.write_str("-")?,
                (0, false) => {}
                (_, true) => f.write_str(" - ")?,
                (_, false) => f.write_str(" + ")?,
            }
            // A leading `-` binds tighter than `//`, so `-(a // b)` needs its parentheses.
            write_term(f, m, mag, i == 0 && neg)?;
        }
        Ok(())
    }
}

fn write_term(f: &mut fmt::Formatter<'_>, m: &Monomial, mag: u64, negated: bool) -> fmt::Result {
    if m.0.is_empty() {
        return write!(f, "{mag}");
    }
    let factors: usize = m.0.iter().map(|(_, p)| *p as usize).sum();
    let alone = mag == 1 && factors == 1 && !negated;
    let mut first = true;
    if mag != 1 {
        write!(f, "{mag}")?;
        first = false;
    }
    for (atom, pow) in &m.0 {
        for _ in 0..*pow {
            if !first {
                f.write_str("*")?;
            }
            first = false;
            write_atom(f, atom, !alone)?;
        }
    }
    Ok(())
}

/// Writes an atom; `//` and `%` atoms get parentheses when they stand in a product.
fn write_atom(f: &mut fmt::Formatter<'_>, atom: &Atom, in_product: bool) -> fmt::Result {
    match atom {
        Atom::Sym(s) => f.write_str(s),
        Atom::FloorDiv(a, b) | Atom::Mod(a, b) => {
            let op = if matches!(atom, Atom::FloorDiv(..)) {
                "//"
            } else {
                "%"
            };
            if in_product {
                f.write_str("(")?;
            }
            write_operand(f, a, false)?;
            write!(f, " {op} ")?;
            write_operand(f, b, true)?;
            if in_product {
                f.write_str(")")?;
            }
            Ok(())
        }
        Atom::Min(a, b) => write!(f, "min({a}, {b})"),
        Atom::Max(a, b) => write!(f, "max({a}, {b})"),
    }
}

/// Writes an operand of `//` or `%`. The left operand needs parentheses if it is a sum or
/// negative; the right one unless it is a single non-negative constant or bare atom.
fn write_operand(f: &mut fmt::Formatter<'_>, d: &Dim, right: bool) -> fmt::Result {
    let simple = match d.terms.as_slice() {
        [] => true,
        [(m, c)] => {
            let single_atom = m.0.is_empty() || (m.0.len() == 1 && m.0[0].1 == 1 && *c == 1);
            let plain_atom =
                m.0.is_empty() || matches!(m.0[0].0, Atom::Sym(_) | Atom::Min(..) | Atom::Max(..));
            *c >= 0
                && if right {
                    single_atom && plain_atom
                } else {
                    true
                }
        }
        _ => false,
    };
    if simple {
        write!(f, "{d}")
    } else {
        write!(f, "({d})")
    }
}
