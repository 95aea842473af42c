//! Kiln, a neural-network compiler: the facade crate a user depends on.
//!
//! Today it re-exports the tensor IR ([`ir`]): build a graph, print it, parse it back and run it
//! with the reference interpreter. The model DSL, compiler and runtime join it as they land.

pub use kiln_ir as ir;
