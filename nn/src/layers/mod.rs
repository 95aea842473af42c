//! The nn layer library. Each layer is a `#[kiln::model]` with PyTorch's parameter names.

mod attention;
mod kv_cache;
mod linear;
mod mha;
mod rotary;

pub use attention::{Attention, AttentionConfig};
pub use kv_cache::{KvCache, KvCacheConfig, PAST};
pub use linear::{Linear, LinearConfig};
pub use mha::{MultiheadAttention, MultiheadAttentionConfig};
pub use rotary::{RopeConvention, RopeScaling, RotaryConfig, RotaryEmbedding};
