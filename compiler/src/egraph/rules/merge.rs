//! Merging rules (TENSAT-style): several products of one input with different weights become
//! one product with the concatenated weights, sliced apart again.
//!
//! `matmul-merge-shared-input` is a whole-graph rule ([`RuleDef::global`]): egg rewrites match
//! one node, and this pattern spans several. It scans the e-graph for `matmul` nodes with
//! `trans_b = true` whose `b` class holds a `param` (a `Linear` weight stored `[n_i, k]`, no
//! batch dims) of a non-quantized dtype, and groups them by `(a class, trans_a, b dtype, k)`.
//! Every group of two or more distinct weights `W_1 .. W_m` (ordered by e-class id, which
//! is the weights' order in the traced graph) gives each original class the equal term
//!
//! ```text
//! slice(matmul(a, concat([W_1, ..., W_m], axis 0), trans_b), last axis, o_i, o_i + n_i)
//! ```
//!
//! with `o_i = n_1 + ... + n_(i-1)`. This is exact: each output element is the same dot
//! product of a row of `op(a)` with a row of `W_i`, accumulated in the same order. The concat
//! is params-only, so the scheduler runs it once at load time, and the cost model charges it
//! (almost) nothing (see [`crate::egraph::cost`]). In a Llama this merges Q/K/V and gate/up.
//!
//! Block-quantized weights are skipped: the IR's `concat` does not take quantized operands.

use super::{Ctx, Rhs, RuleDef};
use egg::Id;
use kiln_ir::{DType, Dim, Op};

/// The merging rule set.
pub fn rules() -> Vec<RuleDef> {
    vec![RuleDef::global(
        "matmul-merge-shared-input",
        matmul_merge_shared_input,
    )]
}

/// One group of mergeable products: the key and `(matmul class, weight class)` members.
struct Group {
    a: Id,
    trans_a: bool,
    dtype: DType,
    k: Dim,
    members: Vec<(Id, Id)>,
}

fn matmul_merge_shared_input(ctx: &Ctx) -> Vec<(Id, Rhs)> {
    let eg = ctx.egraph;
    let mut ids: Vec<Id> = eg.classes().map(|c| c.id).collect();
    ids.sort();
    let mut groups: Vec<Group> = Vec::new();
    for class in ids {
        for (op, node) in ctx.nodes(class) {
            let Op::MatMul {
                trans_a,
                trans_b: true,
            } = op
            else {
                continue;
            };
            let (a, b) = (eg.find(node.children[0]), eg.find(node.children[1]));
            let bt = ctx.ty(b);
            if bt.rank() != 2 || bt.dtype.is_quantized() {
                continue;
            }
            if !ctx.nodes(b).any(|(o, _)| matches!(o, Op::Param { .. })) {
                continue;
            }
            let k = &bt.shape[1];
            let g = match groups
                .iter_mut()
                .find(|g| g.a == a && g.trans_a == *trans_a && g.dtype == bt.dtype && g.k == *k)
            {
                Some(g) => g,
                None => {
                    groups.push(Group {
                        a,
                        trans_a: *trans_a,
                        dtype: bt.dtype,
                        k: k.clone(),
                        members: Vec::new(),
                    });
                    groups.last_mut().expect("just pushed")
                }
            };
            if !g.members.iter().any(|(_, w)| *w == b) {
                g.members.push((class, b));
            }
        }
    }
    let mut out = Vec::new();
    for mut g in groups {
        if g.members.len() < 2 {
            continue;
        }
        g.members.sort_by_key(|(_, w)| *w);
        let weights: Vec<Id> = g.members.iter().map(|(_, w)| *w).collect();
        let merged = Rhs::Node(
            Op::MatMul {
                trans_a: g.trans_a,
                trans_b: true,
            },
            vec![Rhs::Class(g.a), Rhs::node(Op::Concat { axis: 0 }, &weights)],
        );
        let mut offset = Dim::constant(0);
        for (class, w) in &g.members {
            let n = ctx.ty(*w).shape[0].clone();
            let end = offset.clone() + n;
            let axis = ctx.ty(*class).rank() - 1;
            out.push((
                *class,
                Rhs::Node(
                    Op::Slice {
                        axis,
                        start: offset,
                        end: end.clone(),
                        step: 1,
                    },
                    vec![merged.clone()],
                ),
            ));
            offset = end;
        }
    }
    out
}
