//! Creation helpers: zeros, ones, full, constants, arange, triangular masks, symbolic sizes as
//! values.
//!
//! The associated functions create tensors in the thread's current trace.
//!
//! # Panics
//! They panic when called outside a [`crate::Trace`], where there is no graph to add to.

use super::Tensor;
use crate::trace::Tracer;
use kiln_ir::{DType, Dim, Scalar, Shape};
use std::panic::Location;

fn current(what: &str) -> Tracer {
    Tracer::current().unwrap_or_else(|| panic!("Tensor::{what} called outside a kiln trace"))
}

impl Tensor {
    /// A tensor filled with `value`.
    #[track_caller]
    pub fn full(shape: Shape, value: Scalar, dtype: DType) -> Tensor {
        current("full").push_with(Location::caller(), |g| g.full(value, dtype, shape))
    }

    /// Zeros.
    #[track_caller]
    pub fn zeros(shape: Shape, dtype: DType) -> Tensor {
        let v = super::axes::Scalarish::to_scalar(0i64, dtype);
        current("zeros").push_with(Location::caller(), |g| g.full(v, dtype, shape))
    }

    /// Ones.
    #[track_caller]
    pub fn ones(shape: Shape, dtype: DType) -> Tensor {
        let v = super::axes::Scalarish::to_scalar(1i64, dtype);
        current("ones").push_with(Location::caller(), |g| g.full(v, dtype, shape))
    }

    /// A dense constant with a concrete shape (tables computed at build time from the config,
    /// such as RoPE's inverse frequencies).
    #[track_caller]
    pub fn constant(value: kiln_ir::Tensor) -> Tensor {
        current("constant").push_with(Location::caller(), |g| g.constant(value))
    }

    /// `[0, 1, ..., n - 1]`.
    #[track_caller]
    pub fn arange(n: impl Into<Dim>, dtype: DType) -> Tensor {
        let n = n.into();
        current("arange").push_with(Location::caller(), |g| g.arange(n, dtype))
    }

    /// A rank-0 tensor holding the run-time value of a symbolic dim (e.g. `past`, the number of
    /// cached positions).
    #[track_caller]
    pub fn dim_value(dim: impl Into<Dim>, dtype: DType) -> Tensor {
        let dim = dim.into();
        current("dim_value").push_with(Location::caller(), |g| g.dim_value(dim, dtype))
    }

    /// A rank-0 tensor of this tensor's dtype holding `dim`'s value, in this tensor's trace.
    pub(crate) fn dim_value_like(&self, dim: &Dim, loc: &Location<'_>) -> Tensor {
        let dtype = self.dtype();
        self.build(loc, |g| g.dim_value(dim.clone(), dtype))
    }

    /// A bool `[rows, cols]` mask, true where `col <= row + diagonal` (`torch.tril` of ones):
    /// with `rows = seq`, `cols = past + seq`, `diagonal = past` it is the causal mask of a
    /// decode step over a KV cache.
    #[track_caller]
    pub fn tril_mask(
        rows: impl Into<Dim>,
        cols: impl Into<Dim>,
        diagonal: impl Into<Dim>,
    ) -> Tensor {
        let loc = Location::caller();
        let tracer = current("tril_mask");
        let shape = Shape(vec![rows.into(), cols.into()]);
        let row = tracer.push_with(loc, |g| g.iota(0, DType::I64, shape.clone()));
        let col = tracer.push_with(loc, |g| g.iota(1, DType::I64, shape.clone()));
        let diag = row.dim_value_like(&diagonal.into(), loc);
        col.le(row.add(&diag))
    }
}
