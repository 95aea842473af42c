//! `MultiheadAttention`: `torch.nn.MultiheadAttention` with `batch_first=True`.

use super::linear::{Linear, LinearConfig};
use crate::functional::scaled_dot_product_attention;
use crate::{Param, Tensor};
use kiln_ir::Dim;
use std::panic::Location;

/// Configuration of a [`MultiheadAttention`] layer.
#[derive(Clone, Debug, PartialEq)]
pub struct MultiheadAttentionConfig {
    /// Model width `E` (queries, output).
    pub embed_dim: usize,
    /// Heads (a divisor of `embed_dim`).
    pub num_heads: usize,
    /// Input projection and `out_proj` biases (torch's `bias`).
    pub bias: bool,
    /// Features of the keys (torch's `kdim`, default `embed_dim`).
    pub kdim: usize,
    /// Features of the values (torch's `vdim`, default `embed_dim`).
    pub vdim: usize,
}

impl MultiheadAttentionConfig {
    /// `embed_dim` wide everywhere, with biases.
    pub fn new(embed_dim: usize, num_heads: usize) -> MultiheadAttentionConfig {
        MultiheadAttentionConfig {
            embed_dim,
            num_heads,
            bias: true,
            kdim: embed_dim,
            vdim: embed_dim,
        }
    }

    /// The same with keys of `kdim` and values of `vdim` features (cross-attention).
    pub fn with_kv_dims(self, kdim: usize, vdim: usize) -> MultiheadAttentionConfig {
        MultiheadAttentionConfig { kdim, vdim, ..self }
    }

    /// The same without biases.
    pub fn no_bias(self) -> MultiheadAttentionConfig {
        MultiheadAttentionConfig {
            bias: false,
            ..self
        }
    }

    /// True when queries, keys and values all have `embed_dim` features: the projections are
    /// packed in `in_proj_weight` (torch's `_qkv_same_embed_dim`).
    pub fn packed(&self) -> bool {
        self.kdim == self.embed_dim && self.vdim == self.embed_dim
    }
}

/// `torch.nn.MultiheadAttention(embed_dim, num_heads, bias, kdim=, vdim=, batch_first=True)`
/// in eval mode, with torch's parameter names: `in_proj_weight` `[3E, E]` (or
/// `q_proj_weight` `[E, E]`, `k_proj_weight` `[E, kdim]`, `v_proj_weight` `[E, vdim]` when
/// `kdim` or `vdim` differ from `E`), `in_proj_bias` `[3E]`, `out_proj.weight`,
/// `out_proj.bias`. (`add_bias_kv`, `add_zero_attn` and dropout are not supported.)
#[crate::model(config = MultiheadAttentionConfig)]
pub struct MultiheadAttention {
    /// Packed q, k, v projections `[3E, E]`.
    #[param(shape = [3 * cfg.embed_dim, cfg.embed_dim], when = cfg.packed())]
    pub in_proj_weight: Option<Param>,
    /// Query projection `[E, E]` (unpacked layout).
    #[param(shape = [cfg.embed_dim, cfg.embed_dim], when = !cfg.packed())]
    pub q_proj_weight: Option<Param>,
    /// Key projection `[E, kdim]` (unpacked layout).
    #[param(shape = [cfg.embed_dim, cfg.kdim], when = !cfg.packed())]
    pub k_proj_weight: Option<Param>,
    /// Value projection `[E, vdim]` (unpacked layout).
    #[param(shape = [cfg.embed_dim, cfg.vdim], when = !cfg.packed())]
    pub v_proj_weight: Option<Param>,
    /// Packed q, k, v biases `[3E]`.
    #[param(shape = [3 * cfg.embed_dim], when = cfg.bias)]
    pub in_proj_bias: Option<Param>,
    /// Output projection.
    #[module(config = LinearConfig {
        in_features: cfg.embed_dim,
        out_features: cfg.embed_dim,
        bias: cfg.bias,
    })]
    pub out_proj: Linear,
    /// The configuration.
    #[config(cfg.clone())]
    pub config: MultiheadAttentionConfig,
}

impl MultiheadAttention {
    /// The attention output (not the weights) for `query` `[batch, L, E]`, `key`
    /// `[batch, S, kdim]` and `value` `[batch, S, vdim]` (or the same without the batch axis).
    ///
    /// Masks use torch's conventions: `key_padding_mask` is `[batch, S]`, bool with true =
    /// *ignore this key*, or float and added to the scores; `attn_mask` is `[L, S]` or
    /// `[batch * num_heads, L, S]`, bool with true = *not allowed*, or float and added.
    /// `is_causal` applies the causal mask (query `i` sees keys `0 ..= i`); torch wants the
    /// same mask in `attn_mask` as a hint, here it may be given or left out. A query that
    /// may see no key gets zeros from the attention (before `out_proj`).
    #[track_caller]
    pub fn forward(
        &self,
        query: &Tensor,
        key: &Tensor,
        value: &Tensor,
        key_padding_mask: Option<&Tensor>,
        attn_mask: Option<&Tensor>,
        is_causal: bool,
    ) -> Tensor {
        let loc = Location::caller();
        let cfg = &self.config;
        if cfg.num_heads == 0 || !cfg.embed_dim.is_multiple_of(cfg.num_heads) {
            return query.usage(
                loc,
                format!(
                    "MultiheadAttention: embed_dim {} is not a multiple of num_heads {}",
                    cfg.embed_dim, cfg.num_heads
                ),
            );
        }
        let unbatched = query.rank() == 2;
        let batch = |t: &Tensor| if unbatched { t.unsqueeze(0) } else { t.clone() };
        let (query, key, value) = (batch(query), batch(key), batch(value));
        let key_padding_mask = key_padding_mask.map(batch);

        let e = cfg.embed_dim as i64;
        let (wq, wk, wv) = match &self.in_proj_weight {
            Some(w) => {
                let w = w.val();
                (
                    w.slice(0, 0, e, 1),
                    w.slice(0, e, 2 * e, 1),
                    w.slice(0, 2 * e, 3 * e, 1),
                )
            }
            None => {
                let get = |p: &Option<Param>| p.as_ref().expect("unpacked layout").val();
                (
                    get(&self.q_proj_weight),
                    get(&self.k_proj_weight),
                    get(&self.v_proj_weight),
                )
            }
        };
        let bias = self.in_proj_bias.as_ref().map(|b| {
            let b = b.val();
            [
                b.slice(0, 0, e, 1),
                b.slice(0, e, 2 * e, 1),
                b.slice(0, 2 * e, 3 * e, 1),
            ]
        });
        let hd = cfg.embed_dim / cfg.num_heads;
        let project = |x: &Tensor, w: &Tensor, i: usize| {
            let y = x.matmul_t(w);
            let y = match &bias {
                Some(b) => y + &b[i],
                None => y,
            };
            let (b, l) = (y.size(0), y.size(1));
            y.reshape(crate::dims![b, l, cfg.num_heads, hd])
                .transpose(1, 2)
        };
        let q = project(&query, &wq, 0);
        let k = project(&key, &wk, 1);
        let v = project(&value, &wv, 2);

        let (b, l, s) = (query.size(0), query.size(1), key.size(1));
        let attn_mask = attn_mask.map(|m| {
            let m = if m.rank() == 3 {
                m.reshape(crate::dims![b.clone(), cfg.num_heads, l.clone(), s.clone()])
            } else {
                m.clone()
            };
            torch_mask(&m)
        });
        let padding = key_padding_mask.map(|m| torch_mask(&m.unsqueeze(1).unsqueeze(1)));
        let mask = match (attn_mask, padding) {
            (Some(a), Some(p)) => Some(a.merge(p)),
            (a, p) => a.or(p),
        }
        .map(Mask::into_tensor);

        let o = scaled_dot_product_attention(&q, &k, &v, mask.as_ref(), is_causal, None);
        let o = o
            .transpose(1, 2)
            .reshape(crate::dims![b, l, Dim::from(cfg.embed_dim)]);
        let o = self.out_proj.forward(&o);
        if unbatched {
            o.squeeze(0)
        } else {
            o
        }
    }
}

/// A mask in [`scaled_dot_product_attention`]'s conventions.
enum Mask {
    /// True = attend.
    Allowed(Tensor),
    /// Added to the scores.
    Additive(Tensor),
}

/// Converts one of torch `MultiheadAttention`'s masks (bool: true = masked out).
#[track_caller]
fn torch_mask(m: &Tensor) -> Mask {
    if m.dtype().is_bool() {
        Mask::Allowed(m.logical_not())
    } else {
        Mask::Additive(m.clone())
    }
}

impl Mask {
    /// Both masks at once (broadcast against each other).
    #[track_caller]
    fn merge(self, other: Mask) -> Mask {
        match (self, other) {
            (Mask::Allowed(a), Mask::Allowed(b)) => Mask::Allowed(a.logical_and(&b)),
            (Mask::Additive(a), Mask::Additive(b)) => Mask::Additive(a + b),
            (Mask::Additive(a), Mask::Allowed(b)) | (Mask::Allowed(b), Mask::Additive(a)) => {
                Mask::Additive(a.masked_fill(&b.logical_not(), f64::NEG_INFINITY))
            }
        }
    }

    fn into_tensor(self) -> Tensor {
        match self {
            Mask::Allowed(t) | Mask::Additive(t) => t,
        }
    }
}
