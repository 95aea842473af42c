//! The CPU backend: loop IR to native code through Cranelift.
//!
//! - [`codegen`]: one kernel to one Cranelift function (the kernel ABI is documented there).
//! - [`jit`]: JIT compilation into executable memory with a process-wide code cache.
//! - [`matmul`]: matmul kernels split into generated packing/epilogue code around
//!   micro-kernels.
//! - [`live_columns`]: the causal bound of a matmul's epilogue (columns whose contraction
//!   the driver may skip).
//! - [`math`]: inline exp/tanh for f32-held values.
//! - [`object`]: ahead-of-time compilation of kernels into a relocatable object file.
//! - [`parallel`]: which loops are split across threads.
//! - [`scalar`]: the helper functions generated code calls (in `kiln-cpu-kernels`, so an
//!   ahead-of-time binary links them without the compiler).
//! - [`vector`]: SIMD code for innermost loops (part of [`codegen`]).
//! - [`normalize`]: a kernel's identity for the cache.

pub mod codegen;
pub mod jit;
pub mod live_columns;
pub mod math;
pub mod matmul;
pub mod normalize;
pub mod object;
pub mod parallel;
pub use kiln_cpu_kernels::scalar;

pub use codegen::{vector, CodegenError};
pub use jit::{compile_kernel, compile_kernels, JitKernel, KernelFn};
pub use object::{emit_object, ObjectCode};
