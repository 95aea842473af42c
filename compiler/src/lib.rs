//! Kiln's compiler: e-graph optimizer, fusion scheduler, memory planner, loop IR and the
//! `cpu`, `wgsl` and `ptx` backends.
//!
//! Nothing is implemented here yet; the crate exists so the workspace has its final shape.
//! Until the compiler lands, graphs run only on the reference interpreter in [`kiln_ir::interp`].

pub mod egraph;
