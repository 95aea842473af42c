//! Kiln's runtime: devices and buffers, the executable runner, and what running a language
//! model needs around it.
//!
//! - Devices: [`cpu`] (native code from the Cranelift backend).
//! - Weight files: [`weights`] (GGUF and SafeTensors, memory-mapped, zero-copy).
//! - Tokenizers: [`tokenizer`] (GGUF vocabularies and `tokenizer.json` through the
//!   `tokenizers` crate; chat templates through `minijinja`).
//! - Sampling: [`sampling`] (temperature, top-k/top-p/min-p, repetition penalty, stop strings).
//! - Language models: [`llm`] (compiled prompt/step programs sharing a KV cache, and
//!   [`llm::Session`] for generation).

pub mod cpu;
pub mod llm;
pub mod sampling;
pub mod tokenizer;
pub mod weights;

pub use cpu::{CpuError, CpuExecutable, CpuOptions};
