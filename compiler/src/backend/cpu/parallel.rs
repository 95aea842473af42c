//! How a kernel's work is split across threads.
//!
//! The *parallel nest* of a kernel is its outermost loop, when the kernel body is exactly
//! one `Parallel` loop, plus the loops directly nested in it while each is again the only
//! statement of its parent, is `Parallel`, does not depend on an outer loop variable and is
//! not an innermost loop (an innermost elementwise loop stays whole, for vector code). The
//! nest is *collapsed*: generated code iterates a flat index over `lo..hi` of the product of
//! the nest's extents, and the runtime hands each thread one range. A kernel without a
//! parallel nest (a serial scatter, a full reduction) runs on one thread over `0..1`.

use crate::loop_ir::{Kernel, Loop, Stmt};
use kiln_ir::{Bindings, Dim};

/// The collapsed parallel loops of a kernel, outermost first (the innermost loop stays
/// whole: [`Kernel::collapsible_nest`]).
pub fn parallel_nest(kernel: &Kernel) -> Vec<&Loop> {
    kernel.collapsible_nest(false)
}

/// The number of flat iterations of the kernel's parallel nest (`None`: not parallel).
pub fn parallel_extent(kernel: &Kernel) -> Option<Dim> {
    let nest = parallel_nest(kernel);
    if nest.is_empty() {
        return None;
    }
    Some(
        nest.iter()
            .fold(Dim::from(1), |acc, l| acc * l.extent.clone()),
    )
}

/// A rough count of innermost iterations one flat iteration of the nest runs (for deciding
/// whether a launch is worth splitting across threads); 1 for an empty body.
pub fn work_per_item(kernel: &Kernel, bindings: &Bindings) -> u64 {
    let nest = parallel_nest(kernel);
    let body = match nest.last() {
        Some(l) => &l.body,
        None => &kernel.body,
    };
    // Extents that depend on loop variables count as 1.
    fn work(body: &[Stmt], b: &Bindings) -> u64 {
        let mut total = 0u64;
        for s in body {
            total = total.saturating_add(match s {
                Stmt::Loop(l) => {
                    let n = l.extent.eval(b).unwrap_or(1).max(0) as u64;
                    n.saturating_mul(work(&l.body, b).max(1))
                }
                Stmt::If { then, .. } => work(then, b),
                _ => 1,
            });
        }
        total
    }
    work(body, bindings).max(1)
}
