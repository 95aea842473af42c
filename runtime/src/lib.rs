//! Kiln's runtime: devices and buffers, the executable runner, and what running a language
//! model needs around it.
//!
//! - Devices: [`cpu`] (native code from the Cranelift backend) and [`wgpu`] (WGSL compute
//!   shaders on any GPU through wgpu).
//! - Weight files: [`weights`] (GGUF and SafeTensors, memory-mapped, zero-copy).
//! - Tokenizers: [`tokenizer`] (GGUF vocabularies and `tokenizer.json` through the
//!   `tokenizers` crate; chat templates through `minijinja`).
//! - Sampling: [`sampling`] (temperature, top-k/top-p/min-p, repetition penalty, stop strings).
//! - Language models: [`llm`] (compiled prompt/step programs sharing a KV cache, and
//!   [`llm::Session`] for generation).

pub mod cpu;
pub mod device;
pub mod llm;
mod profile;
pub mod program;
pub mod sampling;
pub mod tokenizer;
pub mod weights;
pub mod wgpu;

pub use cpu::{CpuError, CpuExecutable, CpuOptions};
pub use device::{Device, Executable};
pub use program::{ExecError, Program};
