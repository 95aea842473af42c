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
/// `torch.nn.functional.scaled_dot_product_attention` (eval mode, no dropout).
///
/// `q` is `[.., Hq, Lq, E]`, `k` `[.., Hk, Lk, E]`, `v` `[.., Hk, Lk, Ev]`.
///
/// - `mask` broadcasts to `[.., Lq, Lk]`: a bool mask says which keys each query may attend
///   to (true = attend), a float mask is added to the scores (torch's two conventions).
/// - `causal` lets query `i` attend to keys `0 ..= i`, as torch's `is_causal` (its
///   lower-triangular mask is aligned to the top left, also when `Lq != Lk`). For a decode
///   step over a KV cache, where the queries are the *last* `Lq` positions, pass
///   `Tensor::tril_mask(lq, lk, lk - lq)` (or the cache offset) as `mask` instead. Unlike
///   torch, `mask` and `causal` may be given together: both apply.
/// - A query that may attend to no key at all gets an output of zeros (torch's math kernel
///   does the same), never NaN.
/// - `scale` defaults to `1/√E`.
/// - Grouped-query attention: when `k` and `v` have fewer heads (axis -3) than `q` and the
///   count divides it, each is repeated as torch's `enable_gqa=True` (and [`repeat_kv`]) does.
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
    let (k, v) = match gqa_repeat(q, k) {
        Ok(1) => (k.clone(), v.clone()),
        Ok(n_rep) => (repeat_kv(k, n_rep), repeat_kv(v, n_rep)),
        Err(message) => return q.usage(loc, message),
    };
    let scores = q.matmul(&k.transpose(-2, -1)) * scale;
    let (lq, lk) = (q.size(-2), k.size(-2));
    let (mut allowed, mut additive) = (None, None);
    if let Some(m) = mask {
        if m.dtype().is_bool() {
            allowed = Some(m.clone());
        } else {
            additive = Some(m.to(scores.dtype()));
        }
    }
    if causal {
        let tri = Tensor::tril_mask(lq, lk, 0);
        allowed = Some(match allowed {
            Some(m) => m.logical_and(&tri),
            None => tri,
        });
    }
    let masked = allowed.is_some() || additive.is_some();
    let scores = match additive {
        Some(a) => scores + a,
        None => scores,
    };
    let scores = match allowed {
        Some(m) => scores.masked_fill(&m.logical_not(), f64::NEG_INFINITY),
        None => scores,
    };
    let probs = if masked {
        safe_softmax(&scores)
    } else {
        scores.softmax(-1)
    };
    probs.matmul(&v)
}

/// How many times each key/value head must be repeated to match the query heads (axis -3).
fn gqa_repeat(q: &Tensor, k: &Tensor) -> Result<usize, String> {
    if q.rank() < 3 || k.rank() < 3 {
        return Ok(1);
    }
    let (hq, hk) = (q.size(-3), k.size(-3));
    if hq == hk {
        return Ok(1);
    }
    match (hq.as_const(), hk.as_const()) {
        (Some(a), Some(b)) if b > 0 && a % b == 0 => Ok((a / b) as usize),
        _ => Err(format!(
            "attention heads: q {} has {hq} heads on axis -3, k {} has {hk}; grouped-query \
             attention needs constant counts with the query heads a multiple of the key heads",
            q.ty(),
            k.ty()
        )),
    }
}

/// Softmax over the last axis where a row of only `-inf` gives zeros instead of NaN.
#[track_caller]
fn safe_softmax(scores: &Tensor) -> Tensor {
    let m = scores.max(-1, true);
    let m = m.masked_fill(&m.eq(f64::NEG_INFINITY), 0.0);
    let e = (scores - &m).exp();
    let sum = e.sum(-1, true);
    let sum = sum.masked_fill(&sum.eq(0.0), 1.0);
    e / sum
}

/// Repeats each of the `kv_heads` heads of `[.., kv_heads, seq, dim]` `n_rep` times in place
/// (`[.., kv_heads * n_rep, seq, dim]`), as Hugging Face's `repeat_kv` and
/// `torch.repeat_interleave(x, n_rep, dim=-3)`.
#[track_caller]
pub fn repeat_kv(x: &Tensor, n_rep: usize) -> Tensor {
    if n_rep == 1 {
        return x.clone();
    }
    let loc = Location::caller();
    if x.rank() < 3 {
        return x.usage(
            loc,
            format!("repeat_kv needs [.., heads, seq, dim], got {}", x.ty()),
        );
    }
    let dims = x.shape().0;
    let r = dims.len();
    let mut expanded = dims[..r - 2].to_vec();
    expanded.push(kiln_ir::Dim::from(n_rep));
    expanded.extend_from_slice(&dims[r - 2..]);
    let mut merged = dims[..r - 3].to_vec();
    merged.push(dims[r - 3].clone() * kiln_ir::Dim::from(n_rep));
    merged.extend_from_slice(&dims[r - 2..]);
    x.unsqueeze(-3)
        .expand(kiln_ir::Shape(expanded))
        .reshape(kiln_ir::Shape(merged))
}

/// Casts to f32 if needed (norms compute in f32, as Hugging Face's Llama does).
#[track_caller]
pub fn to_f32(x: &Tensor) -> Tensor {
    x.to(DType::F32)
}
