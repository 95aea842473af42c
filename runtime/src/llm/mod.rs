//! Running causal language models: the compiled programs and their KV cache ([`model`]),
//! and text generation over them ([`session`]).

pub mod model;
pub mod session;

pub use model::{CausalLm, LmError, LmGraphs, LmOptions};
pub use session::{GenerateOptions, Generation, Session, SessionError, StopReason};
