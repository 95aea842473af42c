//! Which outputs of a kernel may be written into the storage of one of its inputs.
//!
//! Writing `out[i]` over `in[i]` is safe when every iteration reads `in` only at the element it
//! is about to overwrite: the kernel has a single store, to `out` at index `I`; every load of
//! `in` uses exactly the index `I`; and both buffers hold the same dtype and element count. A
//! transposed, broadcast, shifted or reduced read of `in` has another index and is refused.
//! The memory planner still checks lifetimes (the input must be dead after the launch).

use super::{BufferId, BufferRole, Expr, Kernel, KernelKind, Stmt};
use kiln_ir::Dim;

impl Kernel {
    /// `(output, input)` pairs whose storage may be shared (see the module docs).
    pub fn in_place_candidates(&self) -> Vec<(BufferId, BufferId)> {
        if self.kind != KernelKind::Elementwise {
            return Vec::new();
        }
        let mut stores = Vec::new();
        collect_stores(&self.body, &mut stores);
        let [(out, index)] = stores.as_slice() else {
            return Vec::new();
        };
        let Some(out_param) = self.param(*out) else {
            return Vec::new();
        };
        let mut loads = Vec::new();
        collect_loads_in_stmts(&self.body, &mut loads);
        self.params
            .iter()
            .filter(|p| {
                p.role == BufferRole::Input
                    && p.id != *out
                    && p.dtype == out_param.dtype
                    && p.len == out_param.len
                    && loads
                        .iter()
                        .filter(|(b, _)| *b == p.id)
                        .all(|(_, i)| i == index)
            })
            .map(|p| (*out, p.id))
            .collect()
    }
}

/// Every store of `stmts` (nested loops and `if`s included): buffer and index.
pub(super) fn collect_stores(stmts: &[Stmt], out: &mut Vec<(BufferId, Dim)>) {
    for s in stmts {
        match s {
            Stmt::Loop(l) => collect_stores(&l.body, out),
            Stmt::If { then, .. } => collect_stores(then, out),
            Stmt::Store { buffer, index, .. } => out.push((*buffer, index.clone())),
            Stmt::Let { .. } | Stmt::Declare { .. } | Stmt::Assign { .. } => {}
        }
    }
}

/// Every load of `stmts` (nested loops and `if`s included): buffer and index.
pub(super) fn collect_loads_in_stmts(stmts: &[Stmt], out: &mut Vec<(BufferId, Dim)>) {
    for s in stmts {
        match s {
            Stmt::Loop(l) => collect_loads_in_stmts(&l.body, out),
            Stmt::If { cond, then } => {
                collect_loads(cond, out);
                collect_loads_in_stmts(then, out);
            }
            Stmt::Store { value, .. } | Stmt::Let { value, .. } | Stmt::Assign { value, .. } => {
                collect_loads(value, out)
            }
            Stmt::Declare { init, .. } => collect_loads(init, out),
        }
    }
}

fn collect_loads(e: &Expr, out: &mut Vec<(BufferId, Dim)>) {
    match e {
        Expr::Load { buffer, index, .. } | Expr::LoadDequant { buffer, index, .. } => {
            out.push((*buffer, index.clone()))
        }
        Expr::Const { .. } | Expr::Var { .. } | Expr::Index(_) => {}
        Expr::Unary { x, .. } | Expr::Cast { x, .. } => collect_loads(x, out),
        Expr::Binary { a, b, .. } => {
            collect_loads(a, out);
            collect_loads(b, out);
        }
        Expr::Select { cond, a, b } => {
            collect_loads(cond, out);
            collect_loads(a, out);
            collect_loads(b, out);
        }
        Expr::Bind { value, body, .. } => {
            collect_loads(value, out);
            collect_loads(body, out);
        }
    }
}
