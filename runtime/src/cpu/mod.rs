//! The `cpu` device: kernels compiled to native code by the Cranelift backend
//! ([`kiln_compiler::backend::cpu`]), run over host memory by a team of spinning threads
//! (`team.rs`).

mod bytes;
mod executable;
mod gemm;

mod switches;
mod team;

pub use bytes::{tensor_bytes, tensor_from_bytes, AlignedBytes};
pub use executable::{CpuError, CpuExecutable, CpuOptions};
pub(crate) use switches::profile as profile_switch;
pub use switches::{q8_activations, q8_activations_override};
