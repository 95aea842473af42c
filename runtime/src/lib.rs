//! Kiln's runtime: devices and buffers, the executable runner, weight loaders (GGUF,
//! SafeTensors), tokenizers, sampling and generation sessions.
//!
//! Nothing is implemented here yet; the crate exists so the workspace has its final shape.
