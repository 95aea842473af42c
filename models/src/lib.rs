//! Models written in Kiln's DSL: the Llama family first, then BERT, Whisper and diffusion parts.
//!
//! Nothing is implemented here yet; the crate exists so the workspace has its final shape.
