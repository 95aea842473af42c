//! Reductions and the normalizing compositions built on them (softmax, log-softmax, var).

use super::axes::AxisList;
use super::Tensor;
use kiln_ir::ReduceOp;
use std::panic::Location;

impl Tensor {
    fn reduce_dims(
        &self,
        name: &str,
        op: ReduceOp,
        dims: &dyn AxisList,
        keepdim: bool,
        loc: &Location<'_>,
    ) -> Tensor {
        match self.axes(name, &dims.to_axes(), loc) {
            Some(axes) => self.build(loc, |g| g.reduce(op, self.id, &axes, keepdim)),
            None => self.tracer.placeholder(),
        }
    }

    /// Sum over `dims`.
    #[track_caller]
    pub fn sum(&self, dims: impl AxisList, keepdim: bool) -> Tensor {
        self.reduce_dims("sum", ReduceOp::Sum, &dims, keepdim, Location::caller())
    }

    /// Sum over every axis (a rank-0 result; a rank-0 tensor is its own sum).
    #[track_caller]
    pub fn sum_all(&self) -> Tensor {
        if self.rank() == 0 {
            return self.clone();
        }
        let all: Vec<isize> = (0..self.rank() as isize).collect();
        self.reduce_dims("sum_all", ReduceOp::Sum, &all, false, Location::caller())
    }

    /// Product over `dims`.
    #[track_caller]
    pub fn prod(&self, dims: impl AxisList, keepdim: bool) -> Tensor {
        self.reduce_dims("prod", ReduceOp::Prod, &dims, keepdim, Location::caller())
    }

    /// Maximum over `dims` (values only; see [`Tensor::argmax`]).
    #[track_caller]
    pub fn max(&self, dims: impl AxisList, keepdim: bool) -> Tensor {
        self.reduce_dims("max", ReduceOp::Max, &dims, keepdim, Location::caller())
    }

    /// Minimum over `dims`.
    #[track_caller]
    pub fn min(&self, dims: impl AxisList, keepdim: bool) -> Tensor {
        self.reduce_dims("min", ReduceOp::Min, &dims, keepdim, Location::caller())
    }

    /// Index of the first maximum along `dim`, as i64 (a NaN counts as the maximum).
    #[track_caller]
    pub fn argmax(&self, dim: isize, keepdim: bool) -> Tensor {
        self.reduce_dims(
            "argmax",
            ReduceOp::ArgMax,
            &dim,
            keepdim,
            Location::caller(),
        )
    }

    /// Index of the first minimum along `dim`, as i64 (`torch.argmin`; a NaN counts as the
    /// minimum). It is the argmax of an order-reversing map that is exact for every value:
    /// `-x` for floats, `!x` (`-x - 1`, which cannot overflow) for integers.
    #[track_caller]
    pub fn argmin(&self, dim: isize, keepdim: bool) -> Tensor {
        let loc = Location::caller();
        let reversed = if self.dtype().is_float() {
            self.unary(kiln_ir::UnaryOp::Neg, loc)
        } else {
            self.unary(kiln_ir::UnaryOp::Not, loc)
        };
        reversed.reduce_dims("argmin", ReduceOp::ArgMax, &dim, keepdim, loc)
    }

    /// The (symbolic) number of elements a reduction over `dims` combines.
    fn reduced_count(
        &self,
        op: &str,
        dims: &dyn AxisList,
        loc: &Location<'_>,
    ) -> Option<kiln_ir::Dim> {
        let axes = self.axes(op, &dims.to_axes(), loc)?;
        let shape = self.shape();
        Some(
            axes.iter()
                .fold(kiln_ir::Dim::constant(1), |acc, &a| acc * shape[a].clone()),
        )
    }

    /// Mean over `dims`: the sum divided by the (symbolic) number of reduced elements.
    #[track_caller]
    pub fn mean(&self, dims: impl AxisList, keepdim: bool) -> Tensor {
        let loc = Location::caller();
        let Some(count) = self.reduced_count("mean", &dims, loc) else {
            return self.tracer.placeholder();
        };
        let sum = self.reduce_dims("mean", ReduceOp::Sum, &dims, keepdim, loc);
        let n = sum.dim_value_like(&count, loc);
        sum.binary(kiln_ir::BinaryOp::Div, &n, loc)
    }

    /// Variance over `dims`; `correction` 0 is the population variance (LayerNorm's), 1 the
    /// unbiased one (`torch.var`'s default).
    #[track_caller]
    pub fn var(&self, dims: impl AxisList, keepdim: bool, correction: i64) -> Tensor {
        let loc = Location::caller();
        let Some(count) = self.reduced_count("var", &dims, loc) else {
            return self.tracer.placeholder();
        };
        let mean = self.mean(dims.to_axes(), true);
        let centered = self.sub(&mean);
        let sq = centered.square();
        let sum = sq.reduce_dims("var", ReduceOp::Sum, &dims, keepdim, loc);
        let n = sum.dim_value_like(&(count - kiln_ir::Dim::constant(correction)), loc);
        sum.binary(kiln_ir::BinaryOp::Div, &n, loc)
    }

    /// Standard deviation over `dims`: the square root of [`Tensor::var`] with the same
    /// `correction` (`torch.std`; 1 is its default).
    #[track_caller]
    pub fn std(&self, dims: impl AxisList, keepdim: bool, correction: i64) -> Tensor {
        let loc = Location::caller();
        self.var(dims, keepdim, correction)
            .unary(kiln_ir::UnaryOp::Sqrt, loc)
    }

    /// `softmax(x, dim)`: `exp(x - max) / sum(exp(x - max))`, numerically safe.
    #[track_caller]
    pub fn softmax(&self, dim: isize) -> Tensor {
        let loc = Location::caller();
        let m = self.reduce_dims("softmax", ReduceOp::Max, &dim, true, loc);
        let e = self
            .binary(kiln_ir::BinaryOp::Sub, &m, loc)
            .unary(kiln_ir::UnaryOp::Exp, loc);
        let s = e.reduce_dims("softmax", ReduceOp::Sum, &dim, true, loc);
        e.binary(kiln_ir::BinaryOp::Div, &s, loc)
    }

    /// `log_softmax(x, dim)`: `x - max - log(sum(exp(x - max)))`.
    #[track_caller]
    pub fn log_softmax(&self, dim: isize) -> Tensor {
        let loc = Location::caller();
        let m = self.reduce_dims("log_softmax", ReduceOp::Max, &dim, true, loc);
        let shifted = self.binary(kiln_ir::BinaryOp::Sub, &m, loc);
        let lse = shifted
            .unary(kiln_ir::UnaryOp::Exp, loc)
            .reduce_dims("log_softmax", ReduceOp::Sum, &dim, true, loc)
            .unary(kiln_ir::UnaryOp::Log, loc);
        shifted.binary(kiln_ir::BinaryOp::Sub, &lse, loc)
    }
}
