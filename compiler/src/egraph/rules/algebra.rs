//! Algebraic simplification and constant folding.
//!
//! Exactness is judged against the reference interpreter (floats computed in f64 and rounded
//! to the dtype after every op, integers wrapping). Every rule here is bit-exact on every
//! input, NaN, infinities and signed zeros included, except where a rule's doc says
//! otherwise. Rules deliberately left out:
//!
//! - `x * 0 -> 0` on floats: `NaN * 0`, `inf * 0` are NaN and `-1 * 0` is `-0`.
//! - `x - x -> 0` on floats: `inf - inf` is NaN.
//! - `x + (+0.0) -> x` on floats: `-0 + +0` is `+0`. (`x + (-0.0) -> x` is exact and kept.)
//! - `log(exp x) -> x`: `exp` rounds (and overflows to `inf` for large `x`), so `log` does
//!   not give `x` back bit for bit. `exp(log x) -> x` is wrong for `x <= 0` and also rounds.
//! - integer `x / c -> x * (1/c)`: integer division floors, there is no exact reciprocal.

use super::{Ctx, Rhs, RuleDef};
use crate::egraph::lang::{eval_scalar_op, round_scalar, KNode};
use kiln_ir::{BinaryOp, DType, Op, Scalar, UnaryOp};

/// The algebra rule set.
pub fn rules() -> Vec<RuleDef> {
    vec![
        RuleDef::new("add-zero", add_zero),
        RuleDef::new("sub-zero", sub_zero),
        RuleDef::new("mul-one", mul_one),
        RuleDef::new("mul-zero-int", mul_zero_int),
        RuleDef::new("div-one", div_one),
        RuleDef::new("sub-self-int", sub_self_int),
        RuleDef::new("neg-neg", neg_neg),
        RuleDef::new("add-neg", add_neg),
        RuleDef::new("sub-neg", sub_neg),
        RuleDef::new("zero-sub", zero_sub),
        RuleDef::new("fold-unary", fold_unary),
        RuleDef::new("fold-binary", fold_binary),
        RuleDef::new("fold-cast", fold_cast),
        RuleDef::new("fold-where", fold_where),
        RuleDef::new("div-pow2", div_pow2),
        RuleDef::new("pow-two", pow_two),
        RuleDef::new("cast-identity", cast_identity),
        RuleDef::new("cast-cast", cast_cast),
    ]
}

fn is_int(s: Option<Scalar>, v: i64) -> bool {
    matches!(s, Some(Scalar::Int(x)) if x == v)
}

fn is_float(s: Option<Scalar>, v: f64) -> bool {
    matches!(s, Some(Scalar::Float(x)) if x.to_bits() == v.to_bits())
}

/// `v` (an integer-valued constant) in `dtype`'s kind: 0 or 1 here.
fn is_value(s: Option<Scalar>, dtype: DType, v: i64) -> bool {
    if dtype.is_float() {
        is_float(s, v as f64)
    } else {
        is_int(s, v)
    }
}

fn binary_args(op: &Op, node: &KNode, which: BinaryOp) -> Option<(egg::Id, egg::Id)> {
    match op {
        Op::Binary(b) if *b == which => Some((node.children[0], node.children[1])),
        _ => None,
    }
}

fn full(value: Scalar, ctx: &Ctx, like: egg::Id, dtype: DType) -> Rhs {
    Rhs::Node(
        Op::Full {
            value,
            dtype,
            shape: ctx.ty(like).shape.clone(),
        },
        vec![],
    )
}

/// `x (op) e -> x` for an identity element `e` (and `e (op) x -> x` when `commutes`).
fn identity(
    ctx: &Ctx,
    node: &KNode,
    op: &Op,
    which: BinaryOp,
    commutes: bool,
    is_identity: impl Fn(Option<Scalar>, DType) -> bool,
) -> Vec<Rhs> {
    let Some((a, b)) = binary_args(op, node, which) else {
        return vec![];
    };
    let d = ctx.ty(a).dtype;
    let mut out = vec![];
    if is_identity(ctx.konst(b), d) {
        out.push(Rhs::Class(a));
    }
    if commutes && is_identity(ctx.konst(a), d) {
        out.push(Rhs::Class(b));
    }
    out
}

/// `x + 0 -> x` and `0 + x -> x`. Integers: any zero. Floats: only `-0.0`, the additive
/// identity of IEEE addition (`-0 + +0 = +0`, so `x + +0.0` is not `x` for `x = -0`).
fn add_zero(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    identity(ctx, node, op, BinaryOp::Add, true, |s, d| {
        if d.is_float() {
            is_float(s, -0.0)
        } else {
            is_int(s, 0)
        }
    })
}

/// `x - 0 -> x`. Integers: zero. Floats: `+0.0` only (`x - +0 = x + -0 = x` exactly).
fn sub_zero(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    identity(ctx, node, op, BinaryOp::Sub, false, |s, d| {
        is_value(s, d, 0)
    })
}

/// `x * 1 -> x` and `1 * x -> x`, exact for every dtype (IEEE `x * 1 = x`, NaN stays NaN).
fn mul_one(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    identity(ctx, node, op, BinaryOp::Mul, true, |s, d| is_value(s, d, 1))
}

/// `x * 0 -> full 0` and `0 * x -> full 0`, integers only (floats: NaN, inf and signed
/// zeros make it inexact).
fn mul_zero_int(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    let Some((a, b)) = binary_args(op, node, BinaryOp::Mul) else {
        return vec![];
    };
    let d = ctx.ty(a).dtype;
    if d.is_int() && (is_int(ctx.konst(a), 0) || is_int(ctx.konst(b), 0)) {
        vec![full(Scalar::Int(0), ctx, a, d)]
    } else {
        vec![]
    }
}

/// `x / 1 -> x`, exact for floats (IEEE) and integers (floor division by 1).
fn div_one(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    identity(ctx, node, op, BinaryOp::Div, false, |s, d| {
        is_value(s, d, 1)
    })
}

/// `x - x -> full 0`, integers only (floats: `inf - inf` and `NaN - NaN` are NaN).
fn sub_self_int(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    let Some((a, b)) = binary_args(op, node, BinaryOp::Sub) else {
        return vec![];
    };
    let d = ctx.ty(a).dtype;
    if d.is_int() && ctx.egraph.find(a) == ctx.egraph.find(b) {
        vec![full(Scalar::Int(0), ctx, a, d)]
    } else {
        vec![]
    }
}

/// The operands of `neg` nodes in class `id`.
fn negated(ctx: &Ctx, id: egg::Id) -> Vec<egg::Id> {
    ctx.nodes(id)
        .filter(|(op, _)| matches!(op, Op::Unary(UnaryOp::Neg)))
        .map(|(_, n)| n.children[0])
        .collect()
}

/// `neg(neg x) -> x`: exact for floats and for wrapping integers (`-(-MIN) = MIN`).
fn neg_neg(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    if !matches!(op, Op::Unary(UnaryOp::Neg)) {
        return vec![];
    }
    negated(ctx, node.children[0])
        .into_iter()
        .map(Rhs::Class)
        .collect()
}

/// Normal form of negation in sums: `x + neg(y) -> x - y` and `neg(y) + x -> x - y`. Exact:
/// IEEE subtraction is addition of the negation, and float addition is commutative.
fn add_neg(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    let Some((a, b)) = binary_args(op, node, BinaryOp::Add) else {
        return vec![];
    };
    let sub = Op::Binary(BinaryOp::Sub);
    let mut out: Vec<Rhs> = negated(ctx, b)
        .into_iter()
        .map(|y| Rhs::node(sub.clone(), &[a, y]))
        .collect();
    out.extend(
        negated(ctx, a)
            .into_iter()
            .map(|y| Rhs::node(sub.clone(), &[b, y])),
    );
    out
}

/// Normal form of negation in differences: `x - neg(y) -> x + y` (exact, as `add-neg`).
fn sub_neg(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    let Some((a, b)) = binary_args(op, node, BinaryOp::Sub) else {
        return vec![];
    };
    negated(ctx, b)
        .into_iter()
        .map(|y| Rhs::node(Op::Binary(BinaryOp::Add), &[a, y]))
        .collect()
}

/// `0 - x -> neg x`. Signed integers: zero. Floats: `-0.0` only (`+0 - +0 = +0` while
/// `neg(+0) = -0`; `-0 - x` is `neg x` for every `x`).
fn zero_sub(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    let Some((a, b)) = binary_args(op, node, BinaryOp::Sub) else {
        return vec![];
    };
    let d = ctx.ty(a).dtype;
    let ok = if d.is_float() {
        is_float(ctx.konst(a), -0.0)
    } else {
        d.is_signed_int() && is_int(ctx.konst(a), 0)
    };
    if ok {
        vec![Rhs::node(Op::Unary(UnaryOp::Neg), &[b])]
    } else {
        vec![]
    }
}

/// `u(full a) -> full u(a)`: a unary op of a constant, evaluated by the interpreter on one
/// element (so rounding is the interpreter's, bit for bit).
fn fold_unary(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    if !matches!(op, Op::Unary(_)) {
        return vec![];
    }
    let x = node.children[0];
    let d = ctx.ty(x).dtype;
    let Some(v) = ctx.konst(x) else {
        return vec![];
    };
    match eval_scalar_op(op.clone(), &[(v, d)]) {
        Some(r) => vec![full(r, ctx, x, d)],
        None => vec![],
    }
}

/// `full a (op) full b -> full (a op b)` for every binary op, comparisons included (a bool
/// result), evaluated by the interpreter on one element of the dtype.
fn fold_binary(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    let Op::Binary(b) = op else {
        return vec![];
    };
    let (x, y) = (node.children[0], node.children[1]);
    let d = ctx.ty(x).dtype;
    let (Some(u), Some(v)) = (ctx.konst(x), ctx.konst(y)) else {
        return vec![];
    };
    let out = if b.is_comparison() { DType::Bool } else { d };
    match eval_scalar_op(op.clone(), &[(u, d), (v, d)]) {
        Some(r) => vec![full(r, ctx, x, out)],
        None => vec![],
    }
}

/// `cast(full a) -> full cast(a)`, evaluated by the interpreter.
fn fold_cast(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    let Op::Cast { to } = op else {
        return vec![];
    };
    let x = node.children[0];
    let d = ctx.ty(x).dtype;
    let Some(v) = ctx.konst(x) else {
        return vec![];
    };
    match eval_scalar_op(op.clone(), &[(v, d)]) {
        Some(r) => vec![full(r, ctx, x, *to)],
        None => vec![],
    }
}

/// `where(full true, a, b) -> a`, `where(full false, a, b) -> b`.
fn fold_where(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    if !matches!(op, Op::Where) {
        return vec![];
    }
    match ctx.konst(node.children[0]) {
        Some(Scalar::Bool(true)) => vec![Rhs::Class(node.children[1])],
        Some(Scalar::Bool(false)) => vec![Rhs::Class(node.children[2])],
        _ => vec![],
    }
}

/// Strength reduction `x / c -> x * (1/c)` for a float constant `c = ±2^k` whose reciprocal
/// is exactly representable in the dtype. Then `x / c` and `x * (1/c)` are both the correctly
/// rounded value of the same real number (in f64, and again when rounded to the dtype), so
/// the rewrite is bit-exact, NaN, infinities, zeros and subnormal results included. For any
/// other `c`, `1/c` is rounded and the product can differ from the quotient in the last bit.
fn div_pow2(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    let Some((a, b)) = binary_args(op, node, BinaryOp::Div) else {
        return vec![];
    };
    let d = ctx.ty(a).dtype;
    let Some(Scalar::Float(c)) = ctx.konst(b) else {
        return vec![];
    };
    if !d.is_float() || c == 0.0 || !c.is_finite() {
        return vec![];
    }
    let r = 1.0 / c;
    let pow2 = |v: f64| v.is_normal() && v.to_bits() & ((1u64 << 52) - 1) == 0;
    if !pow2(c) || !r.is_normal() || r * c != 1.0 {
        return vec![];
    }
    if round_scalar(Scalar::Float(r), d) != Some(Scalar::Float(r)) {
        return vec![];
    }
    vec![Rhs::Node(
        Op::Binary(BinaryOp::Mul),
        vec![Rhs::Class(a), full(Scalar::Float(r), ctx, b, d)],
    )]
}

/// `pow(x, 2) -> x * x` for f32, f16 and bf16. The square of such a value is exact in f64, so
/// `powf(x, 2.0)` (correctly rounded when the result is representable) and `x * x` give the
/// same f64 and the same rounding. Not applied to f64, where `x * x` rounds and libm's `pow`
/// is not guaranteed to round the same way.
fn pow_two(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    let Some((a, b)) = binary_args(op, node, BinaryOp::Pow) else {
        return vec![];
    };
    let d = ctx.ty(a).dtype;
    if matches!(d, DType::F32 | DType::F16 | DType::BF16) && is_float(ctx.konst(b), 2.0) {
        vec![Rhs::node(Op::Binary(BinaryOp::Mul), &[a, a])]
    } else {
        vec![]
    }
}

/// `cast<d>(x) -> x` when `x` already has dtype `d` (the cast changes no value).
fn cast_identity(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    match op {
        Op::Cast { to } if ctx.ty(node.children[0]).dtype == *to => {
            vec![Rhs::Class(node.children[0])]
        }
        _ => vec![],
    }
}

/// True when every value of `from` is exactly a value of `to` (a widening that loses
/// nothing): then casting through `to` changes no value, and the interpreter's casts depend
/// only on the value.
pub fn lossless(from: DType, to: DType) -> bool {
    use DType::*;
    from == to
        || matches!(
            (from, to),
            (
                Bool,
                I8 | I16 | I32 | I64 | U8 | U32 | F16 | BF16 | F32 | F64
            ) | (F16 | BF16, F32 | F64)
                | (F32, F64)
                | (I8, I16 | I32 | I64 | F16 | F32 | F64)
                | (U8, I16 | I32 | I64 | U32 | F16 | F32 | F64)
                | (I16, I32 | I64 | F32 | F64)
                | (I32, I64 | F64)
                | (U32, I64 | F64)
        )
}

/// `cast<c>(cast<b>(x: a)) -> cast<c>(x)` when `a -> b` is [`lossless`]: the inner cast
/// changes no value, and every cast of the interpreter is a function of the value alone.
fn cast_cast(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    let Op::Cast { to } = op else {
        return vec![];
    };
    ctx.nodes(node.children[0])
        .filter_map(|(inner, n)| match inner {
            Op::Cast { to: b } if lossless(ctx.ty(n.children[0]).dtype, *b) => {
                Some(Rhs::node(Op::Cast { to: *to }, &[n.children[0]]))
            }
            _ => None,
        })
        .collect()
}
