//! Kiln's runtime: devices and buffers and the executable runner. Weight loaders (GGUF,
//! SafeTensors), sampling and generation sessions come with their issue.
//!
//! Devices: [`cpu`] (native code from the Cranelift backend).
//!
//! Tokenizers: [`tokenizer`] (from GGUF metadata or a `tokenizer.json`, streaming decode, chat
//! templates).

pub mod cpu;
pub mod tokenizer;
pub mod weights;

pub use cpu::{CpuError, CpuExecutable, CpuOptions};
