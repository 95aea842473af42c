//! Reusing a reduction phase's element values in a later phase of the same row kernel.
//!
//! The scheduler's row kernels recompute elementwise parts shared by several phases: a
//! softmax row sums `exp(x - max)` over the row, then loops over the row again computing
//! `exp(x - max) / sum` and storing it. [`forward_phase_values`] rewrites such a pair of
//! loops so the reduction loop also stores the shared value into the output row and the
//! later loop reads it back:
//!
//! ```text
//! for k in 0..n @reduction { let e = exp(..k..); acc = add(acc, e) }   // also: store out[I(k)] = e
//! for j in 0..n @parallel  { let e' = exp(..j..); store out[I(j)] = div(e', s) }
//!                                                 // becomes: let e' = load out[I(j)]
//! ```
//!
//! The stored value is the same rounded value the later loop computed, so results are bit
//! for bit unchanged. It applies only when the later loop has the same extent, ends in the
//! kernel's only access to its output buffer (so nothing else reads or writes that buffer),
//! and the shared value is costly (a unary op beyond sign and rounding: `exp`, `sqrt`, ...):
//! storing a cheap value would cost more than recomputing it.
//!
//! Run sequentially (the CPU backend, the loop-IR evaluator) the rewrite is always valid: the
//! row's reduction loop finishes before its later loop starts. A GPU backend that splits a
//! reduction loop across a workgroup's threads would need a storage barrier between the
//! phases, so the pass is applied by the backends that want it, not by the scheduler.

use super::in_place::{collect_loads_in_stmts, collect_stores};
use super::{BufferId, Expr, Kernel, Loop, LoopKind, Stmt};
use kiln_ir::{Dim, UnaryOp};
use std::collections::{BTreeMap, HashMap, HashSet};

/// `kernel` with every reusable reduction-phase value stored and read back (see the module
/// docs), or `None` when nothing applies.
pub fn forward_phase_values(kernel: &Kernel) -> Option<Kernel> {
    let mut k = kernel.clone();
    let mut changed = false;
    let accesses = buffer_accesses(&k.body);
    rewrite_stmts(&mut k.body, &accesses, &mut changed);
    changed.then_some(k)
}

/// How many loads and stores name each buffer anywhere in the kernel.
fn buffer_accesses(stmts: &[Stmt]) -> HashMap<BufferId, usize> {
    let mut all = Vec::new();
    collect_stores(stmts, &mut all);
    collect_loads_in_stmts(stmts, &mut all);
    let mut out = HashMap::new();
    for (b, _) in all {
        *out.entry(b).or_insert(0) += 1;
    }
    out
}

fn rewrite_stmts(stmts: &mut [Stmt], accesses: &HashMap<BufferId, usize>, changed: &mut bool) {
    for i in 0..stmts.len() {
        let is_reduction =
            matches!(&stmts[i], Stmt::Loop(l) if l.annot.kind == LoopKind::Reduction);
        if is_reduction {
            for j in i + 1..stmts.len() {
                let (head, tail) = stmts.split_at_mut(j);
                let (Stmt::Loop(red), Stmt::Loop(par)) = (&mut head[i], &mut tail[0]) else {
                    continue;
                };
                if try_pair(red, par, accesses) {
                    *changed = true;
                    break;
                }
            }
        }
        if let Stmt::Loop(l) = &mut stmts[i] {
            rewrite_stmts(&mut l.body, accesses, changed);
        }
    }
}

/// Applies the rewrite to reduction loop `red` and later parallel loop `par` when legal.
fn try_pair(red: &mut Loop, par: &mut Loop, accesses: &HashMap<BufferId, usize>) -> bool {
    if par.annot.kind != LoopKind::Parallel || par.extent != red.extent {
        return false;
    }
    let Some((Stmt::Store { buffer, index, .. }, par_lets)) = par.body.split_last() else {
        return false;
    };
    let Some((Stmt::Assign { .. }, red_lets)) = red.body.split_last() else {
        return false;
    };
    let all_lets = |s: &[Stmt]| s.iter().all(|s| matches!(s, Stmt::Let { .. }));
    if accesses.get(buffer) != Some(&1) || !all_lets(par_lets) || !all_lets(red_lets) {
        return false;
    }
    let (out, out_index) = (*buffer, index.clone());
    // Pair the reduction's lets with the later loop's lets computing the same value.
    let red_names: HashSet<&str> = red_lets.iter().filter_map(let_name).collect();
    let mut names: HashMap<String, String> = HashMap::new();
    let k_to_j: BTreeMap<String, Dim> = [(red.var.clone(), Dim::symbol(&par.var))].into();
    let mut best: Option<(String, String)> = None;
    for s in red_lets {
        let Stmt::Let { var, dtype, value } = s else {
            continue;
        };
        let Some(renamed) = rename(value, &k_to_j, &names, &red_names) else {
            continue;
        };
        let twin = par_lets.iter().find_map(|p| match p {
            Stmt::Let {
                var: pv,
                dtype: pd,
                value: pval,
            } if pd == dtype && *pval == renamed => Some(pv.clone()),
            _ => None,
        });
        if let Some(pv) = twin {
            names.insert(var.clone(), pv.clone());
            let out_dtype = renamed.dtype();
            if costly(value) && out_dtype == store_dtype(par) {
                best = Some((var.clone(), pv));
            }
        }
    }
    let Some((red_var, par_var)) = best else {
        return false;
    };
    let dtype = store_dtype(par);
    // The reduction loop stores its value at the element the later loop stores.
    let j_to_k: BTreeMap<String, Dim> = [(par.var.clone(), Dim::symbol(&red.var))].into();
    let store = Stmt::Store {
        buffer: out,
        index: out_index.substitute(&j_to_k),
        value: Expr::var(&red_var, dtype),
    };
    let at = red.body.len() - 1;
    red.body.insert(at, store);
    // The later loop reads it back; lets that only fed it are dropped.
    for s in &mut par.body {
        if let Stmt::Let { var, value, .. } = s {
            if *var == par_var {
                *value = Expr::Load {
                    buffer: out,
                    dtype,
                    index: out_index.clone(),
                };
            }
        }
    }
    drop_dead_lets(&mut par.body);
    true
}

/// The dtype a loop ending in a store stores.
fn store_dtype(l: &Loop) -> kiln_ir::DType {
    match l.body.last() {
        Some(Stmt::Store { value, .. }) => value.dtype(),
        _ => kiln_ir::DType::Bool,
    }
}

fn let_name(s: &Stmt) -> Option<&str> {
    match s {
        Stmt::Let { var, .. } => Some(var),
        _ => None,
    }
}

/// `e` with the loop variable substituted in every index and the reduction loop's lets
/// renamed to their twins; `None` if it names a reduction-loop let without a twin (or binds
/// names of its own).
fn rename(
    e: &Expr,
    subst: &BTreeMap<String, Dim>,
    names: &HashMap<String, String>,
    locals: &HashSet<&str>,
) -> Option<Expr> {
    let mut ok = true;
    let renamed = e.rewrite(&mut |x| match x {
        Expr::Var { name, dtype } => match names.get(name) {
            Some(n) => Some(Expr::var(n, *dtype)),
            None => {
                ok &= !locals.contains(name.as_str());
                None
            }
        },
        Expr::Bind { .. } => {
            ok = false;
            None
        }
        _ => x.substitute_leaf(subst),
    });
    ok.then_some(renamed)
}

/// Whether `e` applies a unary op other than the cheap sign and rounding ones (a
/// transcendental function, a root, a reciprocal): worth a store and a load to not repeat.
fn costly(e: &Expr) -> bool {
    let cheap_unary = |op: &UnaryOp| {
        matches!(
            op,
            UnaryOp::Neg
                | UnaryOp::Abs
                | UnaryOp::Not
                | UnaryOp::Sign
                | UnaryOp::Floor
                | UnaryOp::Ceil
                | UnaryOp::Round
        )
    };
    matches!(e, Expr::Unary { op, .. } if !cheap_unary(op)) || e.children().into_iter().any(costly)
}

/// Removes `let`s whose names no later statement of `body` uses.
fn drop_dead_lets(body: &mut Vec<Stmt>) {
    let mut used: HashSet<String> = HashSet::new();
    let mut keep = vec![true; body.len()];
    for (i, s) in body.iter().enumerate().rev() {
        match s {
            Stmt::Let { var, value, .. } => {
                if used.contains(var) {
                    value.refs(&mut used);
                } else {
                    keep[i] = false;
                }
            }
            Stmt::Store { value, index, .. } => {
                value.refs(&mut used);
                used.extend(index.symbols());
            }
            _ => return,
        }
    }
    let mut i = 0;
    body.retain(|_| {
        i += 1;
        keep[i - 1]
    });
}
