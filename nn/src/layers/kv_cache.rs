//! `KvCache`: the keys and values of the positions seen so far, as explicit model state.

use crate::{StateVar, Tensor};
use kiln_ir::{DType, Dim};

/// The symbol that [`KvCache`] uses by default for the number of cached positions.
pub const PAST: &str = "past";

/// Configuration of a [`KvCache`]: a fixed capacity, so a decode step never re-creates it.
#[derive(Clone, Debug, PartialEq)]
pub struct KvCacheConfig {
    /// Batch size: a constant (`1`) or a symbol (`"batch"`) bound by the cache tensors.
    pub batch: Dim,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Capacity in positions (`max_position_embeddings` for a language model).
    pub max_seq: usize,
    /// Size of each head.
    pub head_dim: usize,
    /// Element type of the cached keys and values.
    pub dtype: DType,
    /// The symbol holding the number of positions already cached (default [`PAST`]); it is
    /// bound at run time, once per step.
    pub past: String,
}

impl KvCacheConfig {
    /// An f32 cache of `[batch, num_kv_heads, max_seq, head_dim]` with offset symbol `past`.
    pub fn new(
        batch: impl Into<Dim>,
        num_kv_heads: usize,
        max_seq: usize,
        head_dim: usize,
    ) -> KvCacheConfig {
        KvCacheConfig {
            batch: batch.into(),
            num_kv_heads,
            max_seq,
            head_dim,
            dtype: DType::F32,
            past: PAST.to_string(),
        }
    }

    /// The same cache holding `dtype` values.
    pub fn with_dtype(self, dtype: DType) -> KvCacheConfig {
        KvCacheConfig { dtype, ..self }
    }

    /// The same cache with another offset symbol.
    pub fn with_past_symbol(self, past: &str) -> KvCacheConfig {
        KvCacheConfig {
            past: past.to_string(),
            ..self
        }
    }
}

/// A key/value cache: two state tensors `k` and `v` of shape
/// `[batch, num_kv_heads, max_seq, head_dim]`, named under the prefix it is built with (an
/// [`crate::layers::Attention`] builds its own under its prefix: `layers.0.self_attn.k`).
///
/// A step that sees `seq` new positions after `past` cached ones writes them at offset `past`
/// ([`Tensor::slice_update`]) and reads back the first `past + seq` positions
/// ([`Tensor::slice`] with a symbolic end). The cache is state of the model: the runtime (or
/// the interpreter's caller) feeds each step's new value of `k` and `v` to the next step and
/// binds `past`; positions beyond `past + seq` are never read.
#[crate::model(config = KvCacheConfig)]
pub struct KvCache {
    /// Cached keys, `[batch, num_kv_heads, max_seq, head_dim]`.
    #[state(shape = [cfg.batch.clone(), cfg.num_kv_heads, cfg.max_seq, cfg.head_dim], dtype = cfg.dtype)]
    pub k: StateVar,
    /// Cached values, same shape.
    #[state(shape = [cfg.batch.clone(), cfg.num_kv_heads, cfg.max_seq, cfg.head_dim], dtype = cfg.dtype)]
    pub v: StateVar,
    /// The offset symbol.
    #[config(Dim::symbol(&cfg.past))]
    past: Dim,
    /// Capacity in positions.
    #[config(cfg.max_seq)]
    max_seq: usize,
}

impl KvCache {
    /// The number of positions cached before this step, as a symbolic dim.
    pub fn past(&self) -> Dim {
        self.past.clone()
    }

    /// Capacity in positions.
    pub fn capacity(&self) -> usize {
        self.max_seq
    }

    /// Writes this step's keys and values (`[batch, num_kv_heads, seq, head_dim]`) at offset
    /// `past`, makes the result the caches' next value, and returns the keys and values of
    /// all `past + seq` positions (in the new keys' dtype).
    #[track_caller]
    pub fn update(&self, k_new: &Tensor, v_new: &Tensor) -> (Tensor, Tensor) {
        (self.append(&self.k, k_new), self.append(&self.v, v_new))
    }

    #[track_caller]
    fn append(&self, state: &StateVar, new: &Tensor) -> Tensor {
        let dtype = new.dtype();
        let end = self.past.clone() + new.size(-2);
        let all = state
            .val()
            .slice_update(2, self.past.clone(), &new.to(state.dtype()));
        state.set(&all);
        all.slice(2, 0, end, 1).to(dtype)
    }
}
