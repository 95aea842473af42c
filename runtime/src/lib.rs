//! Kiln's runtime: devices and buffers and the executable runner. Weight loaders (GGUF,
//! SafeTensors), tokenizers, sampling and generation sessions come with their issue.
//!
//! Devices: [`cpu`] (native code from the Cranelift backend).

pub mod cpu;
pub mod llm;
pub mod weights;

pub use cpu::{CpuError, CpuExecutable, CpuOptions};
