//! Which columns of a matmul row need the contraction: a causal bound read off the epilogue.
//!
//! Causal attention stores `select(col > row + past, -inf, acc * scale)`: for columns past
//! the bound the stored value does not depend on the accumulator, so a driver may skip
//! computing those columns of the product. [`live_columns`] recognizes an epilogue whose
//! store is such a select, with an index-only condition `col > last(row)` (or its negation
//! choosing the accumulator side), and returns `last`: column `c` of row `r` is *live* only
//! when `c <= last(r)`. It also proves that `last` grows with the row by a constant step
//! (`last(r + 1) - last(r)` a non-negative constant), so `last(r) = last(0) + step * r` and a
//! block of rows `r0..r0 + rn` has live columns `0..=last(r0 + rn - 1)`.
//!
//! The dead columns of a tile are left uncomputed (stale scratch); the epilogue's select
//! discards them, so results are unchanged bit for bit.

use crate::loop_ir::{Expr, Stmt};
use kiln_ir::{BinaryOp, DType, Dim, Scalar, UnaryOp};
use std::collections::BTreeMap;

/// A causal bound: the last live column of row `r` is `last0 + step * r`.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveColumns {
    /// The last live column of row 0, over the kernel's symbol parameters.
    pub last0: Dim,
    /// How much further each next row reaches (non-negative).
    pub step: i64,
}

impl LiveColumns {
    /// How many of the columns `c0..c0 + cn` are live for some row of `r0..r0 + rn`
    /// (`rn >= 1`), given `last0` evaluated.
    pub fn count(&self, last0: i64, r0: i64, rn: i64, c0: i64, cn: i64) -> i64 {
        (last0 + self.step * (r0 + rn - 1) + 1 - c0).clamp(0, cn)
    }
}

/// The causal bound (see the module docs) of a matmul's column body, or `None` when its
/// store is not a causal select. `symbols` are the kernel's symbol parameters: `last` may use
/// them and `row`, nothing else.
pub fn live_columns(
    body: &[Stmt],
    row: &str,
    col: &str,
    symbols: &[String],
) -> Option<LiveColumns> {
    // One store, at the end, and no conditional statements: the store is all the epilogue
    // does with the accumulators.
    let stores = body
        .iter()
        .filter(|s| matches!(s, Stmt::Store { .. }))
        .count();
    if stores != 1 || body.iter().any(|s| matches!(s, Stmt::If { .. })) {
        return None;
    }
    let Some(Stmt::Store { value, .. }) = body.last() else {
        return None;
    };
    let value = resolve(value, body)?;
    let Expr::Select { cond, a, b } = value else {
        return None;
    };
    // `cond` true picks `a`. Dead when `c > last`: either `cond` is that and `a` is the
    // accumulator-free side, or `cond` is `c <= last` and `b` is.
    let (dead_when_true, dead_side) = if is_constant(a) {
        (true, a)
    } else if is_constant(b) {
        (false, b)
    } else {
        return None;
    };
    debug_assert!(is_constant(dead_side));
    let cond = resolve(cond, body)?;
    let (c, last, gt) = comparison(cond)?;
    // `gt`: cond is `c > last`; otherwise `c <= last`.
    if gt != dead_when_true || c != Dim::symbol(col) {
        return None;
    }
    let allowed = |s: &String| s == row || symbols.contains(s);
    if !last.symbols().iter().all(allowed) {
        return None;
    }
    // Non-decreasing in the row, by a constant step.
    let at = |r: Dim| last.substitute(&BTreeMap::from([(row.to_string(), r)]));
    let step = (at(Dim::symbol(row) + Dim::from(1)) - last.clone()).as_const()?;
    (step >= 0).then(|| LiveColumns {
        last0: at(Dim::from(0)),
        step,
    })
}

/// `e`, with a variable replaced by its `let` in `body` (one level at a time).
fn resolve<'e>(e: &'e Expr, body: &'e [Stmt]) -> Option<&'e Expr> {
    let mut e = e;
    for _ in 0..8 {
        let Expr::Var { name, .. } = e else {
            return Some(e);
        };
        e = body.iter().find_map(|s| match s {
            Stmt::Let { var, value, .. } if var == name => Some(value),
            _ => None,
        })?;
    }
    None
}

/// A constant value (the masked side: `-inf`).
fn is_constant(e: &Expr) -> bool {
    matches!(e, Expr::Const { .. })
}

/// `(c, last, true)` for `c > last` (also `last < c`, `not(c <= last)`), `(c, last, false)`
/// for `c <= last` (also `last >= c`, `not(c > last)`), over integer index expressions.
fn comparison(e: &Expr) -> Option<(Dim, Dim, bool)> {
    match e {
        Expr::Unary {
            op: UnaryOp::Not,
            x,
            ..
        } => comparison(x).map(|(c, l, gt)| (c, l, !gt)),
        Expr::Binary { op, dtype, a, b } if dtype.is_int() => {
            let (x, y) = (index(a)?, index(b)?);
            match op {
                BinaryOp::Gt => Some((x, y, true)),
                BinaryOp::Lt => Some((y, x, true)),
                BinaryOp::Le => Some((x, y, false)),
                BinaryOp::Ge => Some((y, x, false)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// An integer expression of indices and constants as a `Dim`.
fn index(e: &Expr) -> Option<Dim> {
    match e {
        Expr::Index(d) => Some(d.clone()),
        Expr::Const {
            value: Scalar::Int(v),
            ..
        } => Some(Dim::from(*v)),
        Expr::Binary {
            op,
            dtype: DType::I64,
            a,
            b,
        } => {
            let (x, y) = (index(a)?, index(b)?);
            match op {
                BinaryOp::Add => Some(x + y),
                BinaryOp::Sub => Some(x - y),
                BinaryOp::Mul => Some(x * y),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(s: &str) -> Expr {
        Expr::Index(Dim::symbol(s))
    }

    fn bin(op: BinaryOp, a: Expr, b: Expr) -> Expr {
        Expr::Binary {
            op,
            dtype: DType::I64,
            a: Box::new(a),
            b: Box::new(b),
        }
    }

    fn body(cond: Expr, dead_first: bool) -> Vec<Stmt> {
        let dead = Expr::Const {
            value: Scalar::Float(f64::NEG_INFINITY),
            dtype: DType::F32,
        };
        let live = Expr::Var {
            name: "mm".into(),
            dtype: DType::F32,
        };
        let (a, b) = if dead_first {
            (dead, live)
        } else {
            (live, dead)
        };
        vec![
            Stmt::Let {
                var: "v".into(),
                dtype: DType::F32,
                value: Expr::Select {
                    cond: Box::new(cond),
                    a: Box::new(a),
                    b: Box::new(b),
                },
            },
            Stmt::Store {
                buffer: crate::loop_ir::BufferId(0),
                index: Dim::symbol("c"),
                value: Expr::Var {
                    name: "v".into(),
                    dtype: DType::F32,
                },
            },
        ]
    }

    #[test]
    fn causal_bounds_in_every_spelling() {
        let syms = vec!["past".to_string()];
        let last = || bin(BinaryOp::Add, idx("r"), idx("past"));
        let want = LiveColumns {
            last0: Dim::symbol("past"),
            step: 1,
        };
        let not = |x: Expr| Expr::Unary {
            op: UnaryOp::Not,
            dtype: DType::Bool,
            x: Box::new(x),
        };
        for (cond, dead_first) in [
            (not(bin(BinaryOp::Le, idx("c"), last())), true),
            (bin(BinaryOp::Gt, idx("c"), last()), true),
            (bin(BinaryOp::Lt, last(), idx("c")), true),
            (bin(BinaryOp::Le, idx("c"), last()), false),
            (bin(BinaryOp::Ge, last(), idx("c")), false),
        ] {
            let b = body(cond.clone(), dead_first);
            assert_eq!(
                live_columns(&b, "r", "c", &syms),
                Some(want.clone()),
                "{cond:?}"
            );
        }
    }

    #[test]
    fn other_conditions_are_not_bounds() {
        let syms = vec!["past".to_string()];
        let last = || bin(BinaryOp::Add, idx("r"), idx("past"));
        for (cond, dead_first) in [
            // The accumulator side chosen when c > last: live past the bound.
            (bin(BinaryOp::Gt, idx("c"), last()), false),
            // Bounded from below, not above.
            (bin(BinaryOp::Lt, idx("c"), last()), true),
            // Decreasing in the row.
            (
                bin(
                    BinaryOp::Gt,
                    idx("c"),
                    bin(BinaryOp::Sub, idx("past"), idx("r")),
                ),
                true,
            ),
            // Another variable.
            (bin(BinaryOp::Gt, idx("c"), idx("k")), true),
            // Not a bound on the column.
            (bin(BinaryOp::Gt, idx("r"), idx("past")), true),
        ] {
            let b = body(cond.clone(), dead_first);
            assert_eq!(live_columns(&b, "r", "c", &syms), None, "{cond:?}");
        }
    }
}
