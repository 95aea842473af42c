//! Run-time choice of the kernel implementation from the CPU's features.
//!
//! The choice is made once per process and cached. Setting the environment variable
//! `KILN_CPU_KERNELS=portable` before the first kernel call forces the portable kernels
//! (useful to test a backend against both paths); the [`crate::portable`] module calls them
//! directly without touching the cached choice.

use std::sync::OnceLock;

/// An instruction-set level the kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Plain Rust, no target features assumed: correct on every CPU.
    Portable,
    /// x86-64 with AVX2, FMA and F16C (Haswell, Zen and later).
    Avx2Fma,
}

/// The implementation the public kernels use on this CPU (detected on first call).
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        if std::env::var("KILN_CPU_KERNELS").is_ok_and(|v| v.eq_ignore_ascii_case("portable")) {
            return Isa::Portable;
        }
        detect()
    })
}

/// The best implementation this CPU supports, ignoring the environment.
pub fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return Isa::Avx2Fma;
        }
    }
    Isa::Portable
}
