//! The f32 dot product.

use crate::dispatch::{isa, Isa};

/// f32 dot product of length `n`: `sum_i a[i] * b[i]`.
///
/// The summation order is unspecified (several partial sums, combined at the end).
///
/// # Safety
/// `a` and `b` must be valid for reading `n` f32 each (any alignment of an f32).
pub unsafe fn dot_f32(n: usize, a: *const f32, b: *const f32) -> f32 {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` returned Avx2Fma only after detecting AVX2 and FMA; the caller
        // guarantees the pointers.
        Isa::Avx2Fma => unsafe { avx2::dot(n, a, b) },
        // SAFETY: forwarded caller guarantee.
        _ => unsafe { portable(n, a, b) },
    }
}

/// The portable dot product: eight interleaved partial sums (which the compiler keeps in
/// SIMD registers on any target with 128-bit vectors).
///
/// # Safety
/// As [`dot_f32`].
pub unsafe fn portable(n: usize, a: *const f32, b: *const f32) -> f32 {
    if n == 0 {
        return 0.0;
    }
    // SAFETY: the caller guarantees `n` readable f32 behind each pointer.
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(a, n),
            std::slice::from_raw_parts(b, n),
        )
    };
    let mut acc = [0.0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail += x * y;
    }
    let s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    s + tail
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    /// Horizontal sum of the eight lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// AVX2 dot product: four 8-wide FMA accumulators, masked-free scalar tail.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; pointers as [`super::dot_f32`].
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn dot(n: usize, a: *const f32, b: *const f32) -> f32 {
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut acc2 = _mm256_setzero_ps();
        let mut acc3 = _mm256_setzero_ps();
        let mut i = 0;
        // SAFETY (all loads below): indices stay below `n`, which the caller guarantees
        // readable; loadu has no alignment requirement.
        unsafe {
            while i + 32 <= n {
                acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i)), _mm256_loadu_ps(b.add(i)), acc0);
                acc1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.add(i + 8)),
                    _mm256_loadu_ps(b.add(i + 8)),
                    acc1,
                );
                acc2 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.add(i + 16)),
                    _mm256_loadu_ps(b.add(i + 16)),
                    acc2,
                );
                acc3 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.add(i + 24)),
                    _mm256_loadu_ps(b.add(i + 24)),
                    acc3,
                );
                i += 32;
            }
            while i + 8 <= n {
                acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i)), _mm256_loadu_ps(b.add(i)), acc0);
                i += 8;
            }
            let acc = _mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3));
            let mut s = hsum(acc);
            while i < n {
                s += *a.add(i) * *b.add(i);
                i += 1;
            }
            s
        }
    }
}
