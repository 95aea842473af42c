//! A kernel's identity for the code cache: the kernel with its name and buffer ids replaced
//! by positions, so the same kernel over other buffers (layer 7's RMSNorm and layer 8's)
//! shares one compiled function.

use crate::loop_ir::{BufferId, Expr, Kernel, Stmt};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// `kernel` named `k` with buffer `params[i].id` renamed `b{i}`.
pub fn normalized(kernel: &Kernel) -> Kernel {
    let map: HashMap<BufferId, BufferId> = kernel
        .params
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id, BufferId(i as u32)))
        .collect();
    let mut k = kernel.clone();
    k.name = "k".into();
    for p in &mut k.params {
        p.id = map[&p.id];
    }
    rename_stmts(&mut k.body, &map);
    k
}

/// A 64-bit hash of the normalized kernel's printed form.
pub fn kernel_hash(kernel: &Kernel) -> u64 {
    let mut h = DefaultHasher::new();
    normalized(kernel).to_string().hash(&mut h);
    h.finish()
}

fn rename(id: &mut BufferId, map: &HashMap<BufferId, BufferId>) {
    if let Some(n) = map.get(id) {
        *id = *n;
    }
}

fn rename_stmts(body: &mut [Stmt], map: &HashMap<BufferId, BufferId>) {
    for s in body {
        match s {
            Stmt::Loop(l) => rename_stmts(&mut l.body, map),
            Stmt::Let { value, .. } | Stmt::Declare { init: value, .. } => rename_expr(value, map),
            Stmt::Assign { value, .. } => rename_expr(value, map),
            Stmt::Store { buffer, value, .. } => {
                rename(buffer, map);
                rename_expr(value, map);
            }
            Stmt::If { cond, then } => {
                rename_expr(cond, map);
                rename_stmts(then, map);
            }
        }
    }
}

fn rename_expr(e: &mut Expr, map: &HashMap<BufferId, BufferId>) {
    match e {
        Expr::Const { .. } | Expr::Var { .. } | Expr::Index(_) => {}
        Expr::Load { buffer, .. } | Expr::LoadDequant { buffer, .. } => rename(buffer, map),
        Expr::Unary { x, .. } | Expr::Cast { x, .. } => rename_expr(x, map),
        Expr::Binary { a, b, .. } => {
            rename_expr(a, map);
            rename_expr(b, map);
        }
        Expr::Select { cond, a, b } => {
            rename_expr(cond, map);
            rename_expr(a, map);
            rename_expr(b, map);
        }
        Expr::Bind { value, body, .. } => {
            rename_expr(value, map);
            rename_expr(body, map);
        }
    }
}
