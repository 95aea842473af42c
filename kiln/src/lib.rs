//! Kiln, a neural-network compiler: the facade crate a user depends on.
//!
//! - [`model`]: the `#[kiln::model]` attribute that turns a struct into a model with PyTorch
//!   `state_dict` names (see `docs/dsl.md`).
//! - [`nn`]: the symbolic [`nn::Tensor`], [`nn::Trace`], parameters and the layer library.
//! - [`ir`]: the tensor IR, its text format and the reference interpreter that runs a traced
//!   graph.
//! - [`compiler`]: optimizer, scheduler, memory planner and the CPU code generator
//!   (`kiln::compiler::compile`).
//! - [`runtime`]: devices that run a compiled graph (`kiln::runtime::CpuExecutable`).

pub use kiln_compiler as compiler;
pub use kiln_ir as ir;
pub use kiln_nn as nn;
/// A shape from dims of any convertible kind: `dims!["batch", "seq", 64]`.
pub use kiln_nn::dims;
/// Makes a struct a Kiln model (see `docs/dsl.md`).
pub use kiln_nn::model;
pub use kiln_runtime as runtime;
