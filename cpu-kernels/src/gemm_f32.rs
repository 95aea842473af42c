//! f32 matrix product in the "NT" layout: `C = A · Bᵀ` with both operands contiguous
//! along `k`.
//!
//! On AVX2 + FMA CPUs ([`avx2`]) large products pack `A` into 6-row and `B` into 16-column
//! k-major panels (cache-blocked over `k`, `m` and `n`) and run a 6×16 outer-product
//! micro-kernel with twelve 8-wide FMA accumulators; products with very few rows of `A`
//! run an unpacked tile of dot products instead (no packing cost to amortize). The
//! [`portable`] version is a straightforward tiled loop over dot products.

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
pub(crate) mod portable;

use crate::dispatch::{isa, Isa};

/// `C[i*ldc + j] = sum_k A[i*lda + k] * B[j*ldb + k]` for `i < m`, `j < n`.
///
/// Both operands are k-contiguous ("NT" layout: `A` is `m × k` row-major, `B` is `n × k`
/// row-major, so this is `A · Bᵀ`); `C` (`m × n`, row stride `ldc`) is overwritten. With
/// `k == 0`, `C` is set to zero. The summation order over `k` is unspecified.
///
/// # Safety
/// `a` must be valid for reading rows `i < m` of `k` f32 at stride `lda`, `b` rows `j < n`
/// of `k` f32 at stride `ldb`, and `c` valid for writing rows `i < m` of `n` f32 at stride
/// `ldc`; `C` must not overlap `A` or `B`. Pointers need only f32 alignment. Strides may
/// be anything (including smaller than `k` or `n`) as long as the accessed elements are
/// valid; rows of `C` must not overlap each other.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_nt_f32(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2Fma is only returned after detecting AVX2 and FMA; the pointer
        // contract is the caller's.
        Isa::Avx2Fma => unsafe { avx2::gemm_nt(m, n, k, a, lda, b, ldb, c, ldc) },
        // SAFETY: forwarded caller contract.
        _ => unsafe { portable::gemm_nt(m, n, k, a, lda, b, ldb, c, ldc) },
    }
}
