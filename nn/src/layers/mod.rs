//! The nn layer library. Each layer is a `#[kiln::model]` with PyTorch's parameter names.

mod activation;
mod attention;
mod conv;
mod dropout;
mod embedding;
mod kv_cache;
mod linear;
mod mha;
mod mlp;
mod norm;
mod rotary;

pub use activation::{Activation, ReLU, SiLU, Sigmoid, Tanh, GELU};
pub use attention::{Attention, AttentionConfig};
pub use conv::{
    Conv1d, Conv1dConfig, Conv2d, Conv2dConfig, ConvTranspose1d, ConvTranspose1dConfig,
};
pub use dropout::{Dropout, DropoutConfig};
pub use embedding::{Embedding, EmbeddingConfig};
pub use kv_cache::{KvCache, KvCacheConfig, PAST};
pub use linear::{Linear, LinearConfig};
pub use mha::{MultiheadAttention, MultiheadAttentionConfig};
pub use mlp::{GatedMlp, GatedMlpConfig, Mlp, MlpConfig};
pub use norm::{GroupNorm, GroupNormConfig, LayerNorm, LayerNormConfig, RMSNorm, RMSNormConfig};
pub use rotary::{RopeConvention, RopeScaling, RotaryConfig, RotaryEmbedding};
