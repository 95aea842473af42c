//! Kiln's precompiled CPU micro-kernels.
//!
//! The Cranelift CPU backend emits loops and elementwise code itself and calls these
//! kernels for the heavy inner work: f32 matrix products ([`gemm_nt_f32`], [`dot_f32`]) and
//! dot products of GGUF block-quantized weights with f32 activations ([`gemm_nt_qf32`],
//! [`vec_dot_qf32`]: as accurate as f32 products of the dequantized weights) or with
//! activations quantized to 8 bits ([`quantize_activations`], [`vec_dot_q`], [`gemm_nt_q`],
//! as llama.cpp does), plus [`dequantize_row`] for paths that want f32 weights.
//!
//! Every kernel is single-threaded: the caller splits the work (rows of `C`) across threads.
//! The implementation is chosen once, at run time, from the CPU's features
//! ([`dispatch::isa`]): AVX2 + FMA + F16C kernels on x86-64 where available, otherwise the
//! [`portable`] kernels, which are always correct and serve every other target.
//!
//! Layouts are "NT": both operands of a product are contiguous along the reduction axis `k`
//! (an activation row and a weight row, as a linear layer stores them), and `C` is
//! overwritten, never accumulated into. The one exception is [`gemm_nn_f32`], which reads a
//! row-major `[k, n]` right operand (attention's `probs @ V`).
//!
//! Compiled code calls the kernels by symbol name through the `extern "C"` wrappers in
//! [`ffi`]; [`symbols`] lists them with their addresses for a JIT to register. The scalar
//! helpers generated code calls for what Cranelift has no instruction for (transcendental
//! functions, f16 rounding, integer floor division, dequantizing loads) are in [`scalar`],
//! so a program linking ahead-of-time kernels needs this crate only.

#![deny(missing_docs)]

pub mod activation_quant;
pub mod dequant;
pub mod dispatch;
pub mod dot_f32;
pub mod ffi;
pub mod gemm_f32;
pub mod gemm_nn;
pub mod portable;
pub mod quant_dot;
pub mod quant_dot_f32;
pub mod scalar;

mod bytes;

pub use activation_quant::{activation_type, quantize_activations};
pub use dequant::dequantize_row;
pub use dot_f32::dot_f32;
pub use ffi::symbols;
pub use gemm_f32::gemm_nt_f32;
pub use gemm_nn::gemm_nn_f32;
pub use kiln_ir::quant::QuantType;
pub use quant_dot::{gemm_nt_q, vec_dot_q};
pub use quant_dot_f32::{gemm_nt_qf32, vec_dot_qf32};
