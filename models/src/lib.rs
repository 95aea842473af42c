//! Models written in Kiln's DSL: the Llama family first, then BERT, Whisper and diffusion parts.
//!
//! Each model is a `#[kiln::model]` whose `state_dict_keys()` are the Hugging Face checkpoint's
//! keys, built from the `kiln-nn` layer library.

pub mod llama;

pub use llama::{LlamaConfig, LlamaDecoderLayer, LlamaForCausalLM, LlamaModel};
