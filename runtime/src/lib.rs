//! Kiln's runtime: devices and buffers and the executable runner. Weight loaders (GGUF,
//! SafeTensors), tokenizers and generation sessions come with their issue.
//!
//! Devices: [`cpu`] (native code from the Cranelift backend).
//! Sampling: [`sampling`] (temperature, top-k/top-p/min-p, repetition penalty, stop strings).

pub mod cpu;
pub mod llm;
pub mod weights;
pub mod sampling;

pub use cpu::{CpuError, CpuExecutable, CpuOptions};
