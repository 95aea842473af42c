//! Default tunables: a simple, documented heuristic that a tuner may override.
//!
//! - The outermost loop of each top-level loop nest that is not a reduction is `Parallel`
//!   and maps to GPU grid axis 0; a directly nested second parallel loop maps to grid axis 1.
//! - Matmul kernels: the row loop around the contraction (`n`) gets a tile of 32, the
//!   contraction loop a tile of 32, unroll 4 and shared-memory staging; workgroup 16x16.
//! - Reduction loops with a constant extent of at least 4 unroll by 4; a reduction over a
//!   row maps to the workgroup's threads (`Thread(0)`, one workgroup per row, 64 threads).
//! - The innermost parallel loop of an elementwise nest is vectorized by 4 when its extent is
//!   a constant multiple of 4 (8 for multiples of 8); workgroup 256.
//! - Serial loops (scatter) stay plain; scatter kernels use a workgroup of 1.

use super::{GpuAxis, Kernel, KernelKind, LoopKind, Stmt};

/// Fills `kernel`'s annotations and config with the defaults described above.
pub fn annotate(kernel: &mut Kernel) {
    kernel.config.workgroup = match kernel.kind {
        KernelKind::Elementwise => [256, 1, 1],
        KernelKind::Reduction => [64, 1, 1],
        KernelKind::MatMul => [16, 16, 1],
        KernelKind::Scatter => [1, 1, 1],
    };
    let kind = kernel.kind;
    for s in &mut kernel.body {
        if let Stmt::Loop(l) = s {
            if l.annot.kind == LoopKind::Parallel {
                l.annot.gpu = GpuAxis::Grid(0);
                if let [Stmt::Loop(inner)] = l.body.as_mut_slice() {
                    if inner.annot.kind == LoopKind::Parallel && kind != KernelKind::Elementwise {
                        inner.annot.gpu = GpuAxis::Grid(1);
                    }
                }
            }
        }
    }
    annotate_body(&mut kernel.body, kind);
}

fn annotate_body(body: &mut [Stmt], kind: KernelKind) {
    for s in body {
        let Stmt::Loop(l) = s else { continue };
        let innermost = !l.body.iter().any(|s| matches!(s, Stmt::Loop(_)));
        let c = l.extent.as_const();
        match l.annot.kind {
            LoopKind::Reduction => {
                if c.is_some_and(|c| c >= 4) {
                    l.annot.unroll = 4;
                }
                if kind == KernelKind::MatMul {
                    l.annot.tile = Some(32);
                    l.annot.stage_shared = true;
                } else if l.annot.gpu == GpuAxis::None {
                    l.annot.gpu = GpuAxis::Thread(0);
                }
            }
            LoopKind::Parallel => {
                let has_reduction = l
                    .body
                    .iter()
                    .any(|s| matches!(s, Stmt::Loop(i) if i.annot.kind == LoopKind::Reduction));
                if kind == KernelKind::MatMul && has_reduction {
                    l.annot.tile = Some(32);
                }
                if innermost && kind == KernelKind::Elementwise {
                    l.annot.vector = match c {
                        Some(c) if c > 0 && c % 8 == 0 => 8,
                        Some(c) if c > 0 && c % 4 == 0 => 4,
                        _ => 1,
                    };
                }
            }
            LoopKind::Serial => {}
        }
        annotate_body(&mut l.body, kind);
    }
}
