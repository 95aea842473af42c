//! `kiln-nn`: what model code is written against.
//!
//! - [`Tensor`], a symbolic tensor with PyTorch's methods; calling them records IR nodes.
//! - [`Trace`], which collects those nodes into a [`kiln_ir::Graph`] with named inputs, outputs
//!   and state.
//! - [`Param`] and [`StateVar`], the named tensors a model owns, and [`Module`], the trait
//!   `#[kiln::model]` implements.
//! - [`layers`]: the nn library (Linear, Embedding, norms, convolutions, attention, ...), each
//!   layer itself a `#[kiln::model]`.
//! - [`functional`]: activations and other stateless compositions.

pub mod functional;
pub mod layers;
pub mod module;
pub mod param;
pub mod tensor;
pub mod trace;

/// The `#[model]` attribute (re-exported by the facade crate as `#[kiln::model]`).
pub use kiln_macros::model;
pub use module::Module;
pub use param::{Param, ParamKind, ParamSpec, StateVar};
pub use tensor::Tensor;
pub use trace::{Trace, TraceError, TraceErrorKind, Tracer};

/// A [`kiln_ir::Shape`] from dims of any convertible kind: `dims!["batch", "seq", 64]`,
/// `dims![b, s, -1]` (with `b`, `s` of type `Dim`).
#[macro_export]
macro_rules! dims {
    ($($d:expr),* $(,)?) => {
        $crate::__private::Shape(vec![$($crate::__private::Dim::from($d)),*])
    };
}

#[doc(hidden)]
pub mod __private {
    pub use kiln_ir::{DType, Dim, Shape};
}
