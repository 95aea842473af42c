//! Movement (view) rules: collapse chains of views, drop identity views, push views below
//! elementwise ops, and fold transposes into `matmul` operand flags.
//!
//! Every rule here moves or removes data movement without touching a value, so all are
//! bit-exact. An `expand` of an elementwise op's scalar operand is kept as it is: no rule
//! materializes it (the cost model charges a view nothing for bytes), and constant folding
//! sees through it (the analysis knows an `expand` of a `full` is that `full`'s value).

use super::{Ctx, Rhs, RuleDef};
use crate::egraph::lang::KNode;
use egg::Id;
use kiln_ir::{infer_type, Dim, Op, TensorType};

/// The movement rule set.
pub fn rules() -> Vec<RuleDef> {
    vec![
        RuleDef::new("reshape-reshape", reshape_reshape),
        RuleDef::new("reshape-identity", reshape_identity),
        RuleDef::new("permute-permute", permute_permute),
        RuleDef::new("permute-identity", permute_identity),
        RuleDef::new("expand-expand", expand_expand),
        RuleDef::new("expand-identity", expand_identity),
        RuleDef::new("slice-slice", slice_slice),
        RuleDef::new("slice-identity", slice_identity),
        RuleDef::new("view-through-unary", view_through_unary),
        RuleDef::new("matmul-fold-transpose-b", matmul_fold_b),
        RuleDef::new("matmul-fold-transpose-a", matmul_fold_a),
    ]
}

/// True when `op` type-checks on the given classes.
fn fits(op: &Op, ins: &[&TensorType]) -> bool {
    infer_type(op, ins).is_ok()
}

/// `(op, operand)` of the nodes in class `id` accepted by `pick`.
fn inner<'a>(ctx: &Ctx<'a>, id: Id, pick: fn(&Op) -> bool) -> Vec<(&'a Op, Id)> {
    ctx.nodes(id)
        .filter(|(op, _)| pick(op))
        .map(|(op, n)| (op, n.children[0]))
        .collect()
}

/// `reshape(reshape x) -> reshape x`: row-major order is preserved by both.
fn reshape_reshape(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    if !matches!(op, Op::Reshape { .. }) {
        return vec![];
    }
    inner(ctx, node.children[0], |o| matches!(o, Op::Reshape { .. }))
        .into_iter()
        .map(|(_, x)| Rhs::node(op.clone(), &[x]))
        .collect()
}

/// `reshape x -> x` when the target shape is `x`'s shape.
fn reshape_identity(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    match op {
        Op::Reshape { shape } if *shape == ctx.ty(node.children[0]).shape => {
            vec![Rhs::Class(node.children[0])]
        }
        _ => vec![],
    }
}

/// `permute_p(permute_q x) -> permute_r x` with `r[i] = q[p[i]]`.
fn permute_permute(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    let Op::Permute { perm: p } = op else {
        return vec![];
    };
    inner(ctx, node.children[0], |o| matches!(o, Op::Permute { .. }))
        .into_iter()
        .filter_map(|(o, x)| match o {
            Op::Permute { perm: q } => Some(Rhs::node(
                Op::Permute {
                    perm: p.iter().map(|&i| q[i]).collect(),
                },
                &[x],
            )),
            _ => None,
        })
        .collect()
}

fn is_identity(perm: &[usize]) -> bool {
    perm.iter().enumerate().all(|(i, &p)| i == p)
}

/// `permute_p x -> x` when `p` is the identity.
fn permute_identity(_: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    match op {
        Op::Permute { perm } if is_identity(perm) => vec![Rhs::Class(node.children[0])],
        _ => vec![],
    }
}

/// `expand_s(expand_t x) -> expand_s x` (broadcasting composes), when `x` broadcasts to `s`
/// directly (it always does; checked with type inference anyway).
fn expand_expand(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    if !matches!(op, Op::Expand { .. }) {
        return vec![];
    }
    inner(ctx, node.children[0], |o| matches!(o, Op::Expand { .. }))
        .into_iter()
        .filter(|(_, x)| fits(op, &[ctx.ty(*x)]))
        .map(|(_, x)| Rhs::node(op.clone(), &[x]))
        .collect()
}

/// `expand x -> x` when the target shape is `x`'s shape.
fn expand_identity(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    match op {
        Op::Expand { shape } if *shape == ctx.ty(node.children[0]).shape => {
            vec![Rhs::Class(node.children[0])]
        }
        _ => vec![],
    }
}

/// `slice(slice(x, a, s1, e1), a, s2, e2) -> slice(x, a, s1 + s2, s1 + e2)` for two step-1
/// slices of the same axis. The bounds the inner slices checked at run time
/// (`s2 <= e2 <= e1 - s1`, `s1 <= e1 <= size`) imply the merged slice's.
fn slice_slice(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    let Op::Slice {
        axis,
        start: s2,
        end: e2,
        step: 1,
    } = op
    else {
        return vec![];
    };
    ctx.nodes(node.children[0])
        .filter_map(|(o, n)| match o {
            Op::Slice {
                axis: a,
                start: s1,
                step: 1,
                ..
            } if a == axis => {
                let merged = Op::Slice {
                    axis: *axis,
                    start: s1 + s2,
                    end: s1 + e2,
                    step: 1,
                };
                fits(&merged, &[ctx.ty(n.children[0])]).then(|| Rhs::node(merged, &[n.children[0]]))
            }
            _ => None,
        })
        .collect()
}

/// `slice(x, a, 0, size, 1) -> x`: a slice of a whole axis.
fn slice_identity(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    match op {
        Op::Slice {
            axis,
            start,
            end,
            step: 1,
        } if *start == Dim::constant(0) && *end == ctx.ty(node.children[0]).shape[*axis] => {
            vec![Rhs::Class(node.children[0])]
        }
        _ => vec![],
    }
}

fn is_view(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape { .. } | Op::Permute { .. } | Op::Expand { .. } | Op::Slice { .. }
    )
}

/// `u(view x) -> view(u x)` for a unary elementwise op or cast `u` and a view (reshape,
/// permute, expand, slice): elementwise ops commute with moving elements around. It lets
/// views gather at the operands of the ops that can absorb them (a transposed `matmul`
/// operand), and makes `u` run on fewer elements below an `expand` or a `slice`.
fn view_through_unary(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    if !matches!(op, Op::Unary(_) | Op::Cast { .. }) {
        return vec![];
    }
    inner(ctx, node.children[0], is_view)
        .into_iter()
        .filter_map(|(view, x)| {
            let u_ty = infer_type(op, &[ctx.ty(x)]).ok()?;
            infer_type(view, &[&u_ty]).ok()?;
            Some(Rhs::Node(view.clone(), vec![Rhs::node(op.clone(), &[x])]))
        })
        .collect()
}

/// For a permutation `p` feeding a matmul operand: `p` with its last two entries swapped, so
/// that `permute_p x == transpose_last2(permute_q x)`. `None` for rank < 2.
fn untranspose(p: &[usize]) -> Option<Vec<usize>> {
    let n = p.len();
    if n < 2 {
        return None;
    }
    let mut q = p.to_vec();
    q.swap(n - 2, n - 1);
    Some(q)
}

/// The matmul operand `permute_p x` as `(x or permute_q x, ...)`: the operand without its
/// last-two-axes transpose.
fn fold_operand(ctx: &Ctx, id: Id) -> Vec<Rhs> {
    inner(ctx, id, |o| matches!(o, Op::Permute { .. }))
        .into_iter()
        .filter_map(|(o, x)| {
            let Op::Permute { perm } = o else { return None };
            let q = untranspose(perm)?;
            Some(if is_identity(&q) {
                Rhs::Class(x)
            } else {
                Rhs::node(Op::Permute { perm: q }, &[x])
            })
        })
        .collect()
}

/// `matmul(a, permute_p x, trans_b) -> matmul(a, permute_q x, !trans_b)` with `q` = `p` with
/// its last two entries swapped (so `permute_p x` is `permute_q x` with the last two axes
/// transposed); when `q` is the identity the operand is `x` itself. With this rule no
/// transpose kernel remains in front of a matmul: the transpose becomes the operand flag.
fn matmul_fold_b(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    let Op::MatMul { trans_a, trans_b } = *op else {
        return vec![];
    };
    let (a, b) = (node.children[0], node.children[1]);
    let new = Op::MatMul {
        trans_a,
        trans_b: !trans_b,
    };
    fold_operand(ctx, b)
        .into_iter()
        .map(|rhs| Rhs::Node(new.clone(), vec![Rhs::Class(a), rhs]))
        .collect()
}

/// `matmul(permute_p x, b, trans_a) -> matmul(permute_q x, b, !trans_a)`, as
/// `matmul-fold-transpose-b` for the left operand.
fn matmul_fold_a(ctx: &Ctx, node: &KNode, op: &Op) -> Vec<Rhs> {
    let Op::MatMul { trans_a, trans_b } = *op else {
        return vec![];
    };
    let (a, b) = (node.children[0], node.children[1]);
    let new = Op::MatMul {
        trans_a: !trans_a,
        trans_b,
    };
    fold_operand(ctx, a)
        .into_iter()
        .map(|rhs| Rhs::Node(new.clone(), vec![rhs, Rhs::Class(b)]))
        .collect()
}
