//! `Attention`: Llama/Qwen/Mistral-style grouped-query self-attention with RoPE, a causal
//! mask, an optional padding mask and an optional KV cache.

use super::kv_cache::{KvCache, KvCacheConfig};
use super::linear::{Linear, LinearConfig};
use super::rotary::{RotaryConfig, RotaryEmbedding};
use crate::functional::{repeat_kv, scaled_dot_product_attention};
use crate::Tensor;
use kiln_ir::Dim;
use std::panic::Location;

/// Configuration of an [`Attention`] layer.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionConfig {
    /// Model width (input and output features).
    pub hidden_size: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (a divisor of `num_heads`; fewer is grouped-query attention).
    pub num_kv_heads: usize,
    /// Size of each head.
    pub head_dim: usize,
    /// Biases on `q_proj`, `k_proj`, `v_proj` (Hugging Face's `attention_bias`; Qwen2 has
    /// them).
    pub qkv_bias: bool,
    /// A bias on `o_proj` (Llama with `attention_bias` has one, Qwen2 has none).
    pub o_bias: bool,
    /// Rotary embeddings of queries and keys (`None`: no position information here).
    pub rope: Option<RotaryConfig>,
    /// Each position attends only to itself and earlier ones.
    pub causal: bool,
    /// A KV cache owned by the layer, with its state named under the layer's prefix
    /// (`self_attn.k`, `self_attn.v`); `None` for none.
    pub cache: Option<KvCacheConfig>,
}

impl AttentionConfig {
    /// Causal attention without biases, with half-split RoPE of base 10000 over whole heads,
    /// and no cache.
    pub fn new(
        hidden_size: usize,
        num_heads: usize,
        num_kv_heads: usize,
        head_dim: usize,
    ) -> AttentionConfig {
        AttentionConfig {
            hidden_size,
            num_heads,
            num_kv_heads,
            head_dim,
            qkv_bias: false,
            o_bias: false,
            rope: Some(RotaryConfig::new(head_dim, 10000.0)),
            causal: true,
            cache: None,
        }
    }

    /// The same with the given biases.
    pub fn with_bias(self, qkv_bias: bool, o_bias: bool) -> AttentionConfig {
        AttentionConfig {
            qkv_bias,
            o_bias,
            ..self
        }
    }

    /// The same with other rotary embeddings (or none).
    pub fn with_rope(self, rope: Option<RotaryConfig>) -> AttentionConfig {
        AttentionConfig { rope, ..self }
    }

    /// The same, causal or not.
    pub fn with_causal(self, causal: bool) -> AttentionConfig {
        AttentionConfig { causal, ..self }
    }

    /// The same owning an f32 KV cache of `max_seq` positions for `batch` sequences.
    pub fn with_cache(self, batch: impl Into<Dim>, max_seq: usize) -> AttentionConfig {
        let cache = KvCacheConfig::new(batch, self.num_kv_heads, max_seq, self.head_dim);
        AttentionConfig {
            cache: Some(cache),
            ..self
        }
    }

    fn proj(&self, heads: usize, bias: bool) -> LinearConfig {
        LinearConfig {
            in_features: self.hidden_size,
            out_features: heads * self.head_dim,
            bias,
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.num_kv_heads == 0 || !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(format!(
                "attention: num_heads {} is not a multiple of num_kv_heads {}",
                self.num_heads, self.num_kv_heads
            ));
        }
        Ok(())
    }
}

/// Grouped-query self-attention with Hugging Face's names: `q_proj`, `k_proj`, `v_proj`,
/// `o_proj` (`Linear`s, weights `[out, in]`).
///
/// Input `[batch, seq, hidden_size]`, output the same. Queries and keys are rotated
/// ([`RotaryEmbedding`]), key/value heads are repeated to the query heads ([`repeat_kv`]) and
/// the attention is [`scaled_dot_product_attention`] with scale `1/√head_dim`.
///
/// A padding mask is a bool `[batch, kv_len]` tensor, true for real tokens, where `kv_len`
/// is the number of attended positions: `seq` without a cache, `past + seq` with one (declare
/// the input with exactly that dim). A query that sees no real token (a left-padding
/// position) gets a zero attention output rather than NaN.
#[crate::model(config = AttentionConfig)]
pub struct Attention {
    /// `[num_heads * head_dim, hidden_size]`.
    #[module(config = cfg.proj(cfg.num_heads, cfg.qkv_bias))]
    pub q_proj: Linear,
    /// `[num_kv_heads * head_dim, hidden_size]`.
    #[module(config = cfg.proj(cfg.num_kv_heads, cfg.qkv_bias))]
    pub k_proj: Linear,
    /// `[num_kv_heads * head_dim, hidden_size]`.
    #[module(config = cfg.proj(cfg.num_kv_heads, cfg.qkv_bias))]
    pub v_proj: Linear,
    /// `[hidden_size, num_heads * head_dim]`.
    #[module(config = LinearConfig {
        in_features: cfg.num_heads * cfg.head_dim,
        out_features: cfg.hidden_size,
        bias: cfg.o_bias,
    })]
    pub o_proj: Linear,
    /// Rotary embeddings (no parameters).
    #[module(config = cfg.rope.clone().expect("checked by `when`"), when = cfg.rope.is_some())]
    pub rotary_emb: Option<RotaryEmbedding>,
    /// The layer's own KV cache (state `k` and `v` directly under the layer's prefix).
    #[module(
        config = cfg.cache.clone().expect("checked by `when`"),
        when = cfg.cache.is_some(),
        name = ""
    )]
    pub cache: Option<KvCache>,
    /// The configuration.
    #[config(cfg.clone())]
    pub config: AttentionConfig,
}

impl Attention {
    /// Attention over the `seq` positions of `x` alone (no cache), positions `0..seq`.
    #[track_caller]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_full(x, None, None, None)
    }

    /// [`Attention::forward`] with a padding mask `[batch, seq]` (true = real token).
    #[track_caller]
    pub fn forward_masked(&self, x: &Tensor, padding_mask: &Tensor) -> Tensor {
        self.forward_full(x, None, Some(padding_mask), None)
    }

    /// One step over a KV cache: `x` holds `seq` new positions after the cache's `past` ones
    /// (positions `past..past + seq`). Their keys and values are written into `cache` at
    /// offset `past` (the cache's next state) and the queries attend over all `past + seq`
    /// positions.
    #[track_caller]
    pub fn forward_cached(&self, x: &Tensor, cache: &KvCache) -> Tensor {
        self.forward_full(x, None, None, Some(cache))
    }

    /// [`Attention::forward_cached`] with a padding mask `[batch, past + seq]`.
    #[track_caller]
    pub fn forward_cached_masked(
        &self,
        x: &Tensor,
        cache: &KvCache,
        padding_mask: &Tensor,
    ) -> Tensor {
        self.forward_full(x, None, Some(padding_mask), Some(cache))
    }

    /// Every option: explicit `positions` for RoPE (`[seq]` or `[batch, seq]`, integer;
    /// default `past + arange(seq)`), a padding mask, a cache.
    #[track_caller]
    pub fn forward_full(
        &self,
        x: &Tensor,
        positions: Option<&Tensor>,
        padding_mask: Option<&Tensor>,
        cache: Option<&KvCache>,
    ) -> Tensor {
        let loc = Location::caller();
        let cfg = &self.config;
        if let Err(message) = cfg.check() {
            return x.usage(loc, message);
        }
        if x.rank() != 3 {
            return x.usage(
                loc,
                format!(
                    "attention expects [batch, seq, {}], got {}",
                    cfg.hidden_size,
                    x.ty()
                ),
            );
        }
        let (b, s) = (x.size(0), x.size(1));
        let heads = |t: Tensor, n: usize| {
            t.reshape(crate::dims![b.clone(), s.clone(), n, cfg.head_dim])
                .transpose(1, 2)
        };
        let q = heads(self.q_proj.forward(x), cfg.num_heads);
        let k = heads(self.k_proj.forward(x), cfg.num_kv_heads);
        let v = heads(self.v_proj.forward(x), cfg.num_kv_heads);

        let past = cache.map_or(Dim::constant(0), KvCache::past);
        let (q, k) = match (&self.rotary_emb, positions) {
            (Some(r), Some(p)) => (
                r.forward_with_positions(&q, p),
                r.forward_with_positions(&k, p),
            ),
            (Some(r), None) => (r.forward(&q, past.clone()), r.forward(&k, past.clone())),
            (None, _) => (q, k),
        };
        let (k, v) = match cache {
            Some(c) => c.update(&k, &v),
            None => (k, v),
        };
        let kv_len = past.clone() + s.clone();

        let padding = padding_mask.map(|m| m.unsqueeze(1).unsqueeze(1)); // [batch, 1, 1, kv]
        let (mask, causal) = match (cache, cfg.causal) {
            // Without a cache the causal mask is the square one that sdpa builds.
            (None, causal) => (padding, causal),
            (Some(_), true) => {
                let tri = Tensor::tril_mask(s.clone(), kv_len, past);
                let mask = match padding {
                    Some(p) => p.logical_and(&tri),
                    None => tri,
                };
                (Some(mask), false)
            }
            (Some(_), false) => (padding, false),
        };
        let n_rep = cfg.num_heads / cfg.num_kv_heads;
        let (k, v) = (repeat_kv(&k, n_rep), repeat_kv(&v, n_rep));
        let o = scaled_dot_product_attention(&q, &k, &v, mask.as_ref(), causal, None);
        let o = o
            .transpose(1, 2)
            .reshape(crate::dims![b, s, cfg.num_heads * cfg.head_dim]);
        self.o_proj.forward(&o)
    }
}
