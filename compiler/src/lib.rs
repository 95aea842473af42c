//! Kiln's compiler: e-graph optimizer, fusion scheduler, memory planner, loop IR and the
//! `cpu`, `wgsl` and `ptx` backends.
//!
//! Implemented so far: the [`egraph`] optimizer (egg, exact rewrite rules in stages, a cost
//! model), the backend-neutral [`loop_ir`] (with its reference evaluator), the fusion
//! [`schedule`]r that partitions a [`kiln_ir::Graph`] into loop-IR kernels, and the [`memory`]
//! planner (liveness, reuse, symbolic arena sizes), and the [`backend::cpu`] code generator
//! (Cranelift). WGSL and PTX come with their issues.

pub mod backend;
pub mod egraph;
pub mod loop_ir;
pub mod memory;
pub mod pipeline;
pub mod schedule;

pub use pipeline::{compile, CompileError, Compiled, Report};
