//! Running causal language models: the compiled programs and their KV cache ([`model`]).

pub mod model;

pub use model::{CausalLm, LmError, LmGraphs, LmOptions};
