//! Stateless functions: activations, and attention written out of primitives.

use crate::tensor::Tensor;
use kiln_ir::DType;
use std::f64::consts::{FRAC_2_SQRT_PI, SQRT_2};
use std::panic::Location;

/// `max(x, 0)`.
#[track_caller]
pub fn relu(x: &Tensor) -> Tensor {
    x.maximum(0.0)
}

/// `1 / (1 + e^-x)`.
#[track_caller]
pub fn sigmoid(x: &Tensor) -> Tensor {
    let e = x.neg().exp();
    1.0 / &(e + 1.0)
}

/// `x * sigmoid(x)` (SiLU, swish).
#[track_caller]
pub fn silu(x: &Tensor) -> Tensor {
    x * sigmoid(x)
}

/// The approximation used by GELU (PyTorch's `approximate=` argument).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GeluApprox {
    /// `x * Φ(x)` with the error function.
    #[default]
    None,
    /// `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`.
    Tanh,
}

/// GELU, exact or with the tanh approximation.
#[track_caller]
pub fn gelu(x: &Tensor, approx: GeluApprox) -> Tensor {
    match approx {
        GeluApprox::None => {
            let cdf = (x * (1.0 / SQRT_2)).erf() + 1.0;
            x * 0.5 * cdf
        }
        GeluApprox::Tanh => {
            let k = FRAC_2_SQRT_PI / SQRT_2; // √(2/π)
            let inner = (x + &(x * x * x * 0.044715)) * k;
            x * 0.5 * (inner.tanh() + 1.0)
        }
    }
}

/// Scaled dot-product attention, `softmax(q kᵀ · scale + mask) v`, as
/// `torch.nn.functional.scaled_dot_product_attention`.
///
/// `q` is `[.., Lq, E]`, `k` `[.., Lk, E]`, `v` `[.., Lk, Ev]`. `mask` is a bool tensor (true
/// = attend) broadcastable to `[.., Lq, Lk]`; `causal` adds the lower-triangular mask aligned
/// to the end (query `i` sees keys `0 ..= i + Lk - Lq`, which is right for a decode step over a
/// cache). `scale` defaults to `1/√E`. Grouped-query attention: give `k`, `v` fewer heads and
/// repeat them first with [`repeat_kv`].
#[track_caller]
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    causal: bool,
    scale: Option<f64>,
) -> Tensor {
    let loc = Location::caller();
    let e = q.size(-1);
    let scale = match (scale, e.as_const()) {
        (Some(s), _) => s,
        (None, Some(e)) => 1.0 / (e as f64).sqrt(),
        (None, None) => {
            return q.usage(
                loc,
                format!(
                    "attention needs a constant head size or an explicit scale, q is {}",
                    q.ty()
                ),
            );
        }
    };
    let scores = q.matmul(&k.transpose(-2, -1)) * scale;
    let (lq, lk) = (q.size(-2), k.size(-2));
    let mut allowed: Option<Tensor> = mask.cloned();
    if causal {
        let offset = lk.clone() - lq.clone();
        let tri = Tensor::tril_mask(lq, lk, offset);
        allowed = Some(match allowed {
            Some(m) => m.logical_and(&tri),
            None => tri,
        });
    }
    let scores = match allowed {
        Some(m) => scores.masked_fill(&m.logical_not(), f64::NEG_INFINITY),
        None => scores,
    };
    scores.softmax(-1).matmul(v)
}

/// Repeats each of the `kv_heads` heads of `[batch, kv_heads, seq, dim]` `n_rep` times
/// (`[batch, kv_heads * n_rep, seq, dim]`), as Hugging Face's `repeat_kv`.
#[track_caller]
pub fn repeat_kv(x: &Tensor, n_rep: usize) -> Tensor {
    if n_rep == 1 {
        return x.clone();
    }
    let s = x.shape();
    let (b, h, l, d) = (s[0].clone(), s[1].clone(), s[2].clone(), s[3].clone());
    x.unsqueeze(2)
        .expand(crate::dims![
            b.clone(),
            h.clone(),
            n_rep,
            l.clone(),
            d.clone()
        ])
        .reshape(crate::dims![b, h * kiln_ir::Dim::from(n_rep), l, d])
}

/// Casts to f32 if needed (norms compute in f32, as Hugging Face's Llama does).
#[track_caller]
pub fn to_f32(x: &Tensor) -> Tensor {
    x.to(DType::F32)
}
