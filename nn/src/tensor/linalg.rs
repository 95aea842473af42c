//! Matrix products with PyTorch's `matmul` semantics.

use super::Tensor;
use std::panic::Location;

impl Tensor {
    /// `torch.matmul`: 1-D operands are treated as a row (left) or column (right) vector and
    /// that axis is removed from the result; leading axes broadcast.
    #[track_caller]
    pub fn matmul(&self, rhs: &Tensor) -> Tensor {
        let loc = Location::caller();
        let Some(r) = self.same_trace("matmul", rhs, loc) else {
            return self.tracer.placeholder();
        };
        let (ra, rb) = (self.rank(), rhs.rank());
        if ra == 0 || rb == 0 {
            return self.usage(
                loc,
                format!(
                    "matmul: {} @ {}: a rank-0 operand (use mul)",
                    self.ty(),
                    rhs.ty()
                ),
            );
        }
        let ka = self.shape()[ra - 1].clone();
        let kb = rhs.shape()[rb.saturating_sub(2)].clone();
        if ka != kb {
            return self.usage(
                loc,
                format!(
                    "matmul: {} @ {}: the contraction dims {ka} and {kb} differ",
                    self.ty(),
                    rhs.ty()
                ),
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
        // `[.., m, n]`: drop the `m` of a 1-D `self`, then the `n` of a 1-D `rhs` (both for a
        // dot product, which is rank 0).
        let out = a.build(loc, |g| g.matmul(a.id, b.id));
        let out = if ra == 1 { out.squeeze(-2) } else { out };
        if rb == 1 {
            out.squeeze(-1)
        } else {
            out
        }
    }

    /// `self @ weight^T` for a weight stored `[out, in]` (a `Linear`); the weight may be
    /// block-quantized or f16/bf16.
    #[track_caller]
    pub fn matmul_t(&self, weight: &Tensor) -> Tensor {
        let loc = Location::caller();
        let Some(w) = self.same_trace("matmul_t", weight, loc) else {
            return self.tracer.placeholder();
        };
        self.build(loc, |g| g.matmul_t(self.id, w, false, true))
    }
}
