//! Matrix products with PyTorch's `matmul` semantics.

use super::Tensor;
use std::panic::Location;

impl Tensor {
    /// `torch.matmul`: 1-D operands are treated as a row (left) or column (right) vector and
    /// that axis is removed from the result; leading axes broadcast.
    #[track_caller]
    pub fn matmul(&self, rhs: &Tensor) -> Tensor {
        let loc = Location::caller();
        let Some(r) = self.same_trace(rhs, loc) else {
            return self.tracer.placeholder();
        };
        let (ra, rb) = (self.rank(), rhs.rank());
        if ra == 0 || rb == 0 {
            return self.usage(
                loc,
                format!("matmul of a scalar: {} @ {}", self.ty(), rhs.ty()),
            );
        }
        let a = if ra == 1 {
            self.unsqueeze(0)
        } else {
            self.clone()
        };
        let b = if rb == 1 {
            rhs.unsqueeze(-1)
        } else {
            Tensor::from_node(self.tracer.clone(), r)
        };
        let out = a.build(loc, |g| g.matmul(a.id, b.id));
        let out = if rb == 1 { out.squeeze(-1) } else { out };
        if ra == 1 {
            out.squeeze(-2)
        } else {
            out
        }
    }

    /// `self @ weight^T` for a weight stored `[out, in]` (a `Linear`); the weight may be
    /// block-quantized or f16/bf16.
    #[track_caller]
    pub fn matmul_t(&self, weight: &Tensor) -> Tensor {
        let loc = Location::caller();
        let Some(w) = self.same_trace(weight, loc) else {
            return self.tracer.placeholder();
        };
        self.build(loc, |g| g.matmul_t(self.id, w, false, true))
    }
}
