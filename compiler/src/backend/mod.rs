//! Code generators: the loop IR printed for a device. `cpu` (Cranelift) and `wgsl` (WGSL compute
//! shaders, validated by naga, run by wgpu) exist; `ptx` comes with its issue.

pub mod cpu;
pub mod wgsl;
