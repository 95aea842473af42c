//! The e-graph optimizer (egg): the IR as an egg language with a type analysis, staged rule
//! sets, a bytes-plus-flops cost model and deterministic extraction back to a [`kiln_ir::Graph`].
//!
//! ```
//! use kiln_compiler::egraph::{optimize, OptimizeOptions};
//! use kiln_ir::{DType, Dim, Graph, Shape};
//!
//! let mut g = Graph::new();
//! let x = g.input("x", DType::F32, Shape(vec![Dim::symbol("n"), Dim::constant(3)]))?;
//! let t = g.permute(x, &[1, 0])?;
//! let tt = g.permute(t, &[1, 0])?;
//! g.set_output("y", tt)?;
//! let opt = optimize(&g, &OptimizeOptions::default())?;
//! assert_eq!(opt.graph.nodes().len(), 1); // y is x itself
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod convert;
pub mod cost;
pub mod lang;
pub mod optimize;
pub mod rules;

pub use cost::CostModel;
pub use optimize::{optimize, OptimizeOptions, Optimized, RuleStats, Stage, StageStats};

/// Why [`optimize()`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OptimizeError {
    /// Rebuilding the graph failed (a type no longer checks: a bug in a rule).
    #[error("rebuilding the optimized graph: {0}")]
    Ir(#[from] kiln_ir::IrError),
    /// Extraction found no usable term.
    #[error("extraction failed: {0}")]
    Extraction(&'static str),
    /// [`OptimizeOptions::only`] was given a rule name that does not exist.
    #[error("no rewrite rule called `{0}`")]
    UnknownRule(String),
}
