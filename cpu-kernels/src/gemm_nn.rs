//! Products in the "NN" layout, `C = A · B` with `B` read as row-major `[k, n]` (rows along
//! `k` at stride `ldb`): the CPU runtime's path for a right operand that is contiguous along
//! the columns (the compiler's matmul plan `Phase::b_rows`), such as attention's
//! `probs @ V`, which would otherwise be transposed into a k-contiguous panel first.
//!
//! Few rows (decode): each row of `C` is a sum of scaled rows of `B` (an AXPY per `k`),
//! accumulated in registers over one block of columns, in order of `k`. From
//! [`PACKED_MIN_M`] rows on (prefill), on AVX2 + FMA CPUs, `B` is packed into the f32 GEMM's
//! 16-column panels (a plain copy for this layout) and multiplied by its 6×16 micro-kernel.

/// From this many rows of `A` on, the packed micro-kernel path is used (measured on Zen 3
/// with attention's `probs @ V` shapes: `k` = 512, `n` = 64).
pub const PACKED_MIN_M: usize = 16;

/// `C[i*ldc + j] = sum_kk A[i*lda + kk] * B[kk*ldb + j]` for `i < m`, `j < n` (with fused
/// multiply-adds on AVX2 + FMA CPUs); `C` is overwritten (zero when `k == 0`). Below
/// [`PACKED_MIN_M`] rows, summed in order of `kk`; from there on, the order is unspecified.
///
/// # Safety
/// `a` must be valid for reading rows `i < m` of `k` f32 at stride `lda`, `b` rows
/// `kk < k` of `n` f32 at stride `ldb`, and `c` valid for writing rows `i < m` of `n` f32 at
/// stride `ldc`, not overlapping `A` or `B`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_nn_f32(
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
    #[cfg(target_arch = "x86_64")]
    if crate::dispatch::isa() == crate::dispatch::Isa::Avx2Fma {
        // SAFETY: AVX2 and FMA were detected; the pointer contract is the caller's.
        unsafe {
            if m >= PACKED_MIN_M && n > 0 && k > 0 {
                use crate::gemm_f32::avx2::{gemm_packed, BLayout};
                gemm_packed(m, n, k, a, lda, b, ldb, BLayout::Nn, c, ldc);
            } else {
                avx2::gemm_nn(m, n, k, a, lda, b, ldb, c, ldc);
            }
        }
        return;
    }
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f32;
            for kk in 0..k {
                // SAFETY: in bounds by the caller's contract.
                acc += unsafe { *a.add(i * lda + kk) * *b.add(kk * ldb + j) };
            }
            // SAFETY: as above.
            unsafe { *c.add(i * ldc + j) = acc };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// [`super::gemm_nn_f32`] on AVX2 + FMA: blocks of up to 64 columns (eight 8-wide
    /// accumulators), then a scalar tail of fewer than 8 columns.
    ///
    /// # Safety
    /// As [`super::gemm_nn_f32`], on a CPU with AVX2 and FMA.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gemm_nn(
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
        for i in 0..m {
            // SAFETY (whole body): rows `i < m` of A and C, rows `kk < k` of B, columns
            // `j < n`: in bounds by the caller's contract.
            unsafe {
                let (a, c) = (a.add(i * lda), c.add(i * ldc));
                let mut j = 0;
                while j + 64 <= n {
                    block::<8>(k, a, b.add(j), ldb, c.add(j));
                    j += 64;
                }
                if j + 32 <= n {
                    block::<4>(k, a, b.add(j), ldb, c.add(j));
                    j += 32;
                }
                if j + 16 <= n {
                    block::<2>(k, a, b.add(j), ldb, c.add(j));
                    j += 16;
                }
                if j + 8 <= n {
                    block::<1>(k, a, b.add(j), ldb, c.add(j));
                    j += 8;
                }
                for j in j..n {
                    let mut acc = 0.0f32;
                    for kk in 0..k {
                        acc = (*a.add(kk)).mul_add(*b.add(kk * ldb + j), acc);
                    }
                    *c.add(j) = acc;
                }
            }
        }
    }

    /// One row of `C` over `8 * V` columns: `c[..] = sum_kk a[kk] * b[kk*ldb ..]`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block<const V: usize>(
        k: usize,
        a: *const f32,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
    ) {
        // SAFETY: `a[..k]`, `b[kk*ldb .. kk*ldb + 8V]` and `c[..8V]` are in bounds (caller).
        unsafe {
            let mut acc = [_mm256_setzero_ps(); V];
            for kk in 0..k {
                let x = _mm256_broadcast_ss(&*a.add(kk));
                let row = b.add(kk * ldb);
                for (v, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm256_fmadd_ps(x, _mm256_loadu_ps(row.add(8 * v)), *acc);
                }
            }
            for (v, acc) in acc.iter().enumerate() {
                _mm256_storeu_ps(c.add(8 * v), *acc);
            }
        }
    }
}
