//! The portable kernels, callable directly whatever the CPU (for tests and comparisons).
//!
//! The public kernels at the crate root dispatch to these when the CPU lacks AVX2/FMA/F16C
//! (or `KILN_CPU_KERNELS=portable` is set); they have the same contracts.

pub use crate::dot_f32::portable as dot_f32;
pub use crate::gemm_f32::portable::gemm_nt as gemm_nt_f32;
pub use crate::quant_dot::portable::{gemm_nt_q, vec_dot as vec_dot_q};
pub use crate::quant_dot_f32::portable_gemm_nt_qf32 as gemm_nt_qf32;
