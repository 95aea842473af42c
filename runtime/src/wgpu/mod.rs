//! The `wgpu` device: kernels compiled to WGSL by [`kiln_compiler::backend::wgsl`] and run
//! on any GPU with Vulkan, Metal or DX12 (and on CPU Vulkan drivers such as lavapipe).
//!
//! - [`device`]: adapter selection (`KILN_DEVICE=wgpu:N` or `wgpu:NAME`), buffers, the
//!   pipeline cache, weight buffers shared between programs, downloads.
//! - [`executable`]: [`WgpuExecutable`], the same interface as the CPU's
//!   [`crate::CpuExecutable`]: params, states, runs.

pub mod device;
mod executable;

pub use device::{adapters, WgpuDevice};
pub use executable::WgpuExecutable;
