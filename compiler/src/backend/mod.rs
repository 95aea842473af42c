//! Code generators: the loop IR printed for a device. `cpu` (Cranelift) exists; `wgsl` and
//! `ptx` come with their issues.

pub mod cpu;
