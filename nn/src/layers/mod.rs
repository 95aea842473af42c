//! The nn layer library. Each layer is a `#[kiln::model]` with PyTorch's parameter names.

mod linear;

pub use linear::{Linear, LinearConfig};
