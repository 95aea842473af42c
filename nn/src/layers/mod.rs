//! The nn layer library. Each layer is a `#[kiln::model]` with PyTorch's parameter names.

mod activation;
mod conv;
mod dropout;
mod embedding;
mod linear;
mod mlp;
mod norm;

pub use activation::{Activation, ReLU, SiLU, Sigmoid, Tanh, GELU};
pub use conv::{
    Conv1d, Conv1dConfig, Conv2d, Conv2dConfig, ConvTranspose1d, ConvTranspose1dConfig,
};
pub use dropout::{Dropout, DropoutConfig};
pub use embedding::{Embedding, EmbeddingConfig};
pub use linear::{Linear, LinearConfig};
pub use mlp::{GatedMlp, GatedMlpConfig, Mlp, MlpConfig};
pub use norm::{GroupNorm, GroupNormConfig, LayerNorm, LayerNormConfig, RMSNorm, RMSNormConfig};
