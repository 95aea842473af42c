//! Dot products of GGUF block-quantized weight rows with quantized activation rows.
//!
//! A weight row of type `w` (`k` elements, raw GGUF blocks) is multiplied with an
//! activation row quantized by [`crate::quantize_activations`] into
//! [`crate::activation_type`]`(w)`. Products are integer within a (sub-)block and scaled
//! in f32 once per block, as ggml does.
//!
//! On AVX2 CPUs ([`avx2`]) `Q4_0`, `Q4_1`, `Q5_0`, `Q8_0`, `Q4_K`, `Q5_K` and `Q6_K` have
//! SIMD kernels (`maddubs`/`madd` on unpacked quants, after llama.cpp's techniques), which
//! for matrix products process four weight rows per pass over an activation row; the
//! other types run the [`portable`] integer code on every CPU.

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
pub(crate) mod portable;

use kiln_ir::quant::QuantType;

use crate::dispatch::{isa, Isa};

/// Checks that `k` is a whole number of blocks of `w` (and so of its activation type).
fn check_k(w: QuantType, k: usize) {
    assert!(
        k.is_multiple_of(w.block_size()),
        "{k} elements is not a whole number of {w} blocks"
    );
}

/// Dot product of one weight row (`k` elements of type `w`, raw GGUF blocks) with one
/// activation row quantized by [`crate::quantize_activations`]`(w, ..)`.
///
/// # Safety
/// `w_row` must be valid for reading `w.bytes_for(k)` bytes and `act_row` for
/// `activation_type(w).bytes_for(k)` bytes (any alignment). The activation quants must
/// not be `-128` (as [`crate::quantize_activations`] guarantees).
///
/// # Panics
/// If `k` is not a multiple of `w.block_size()`.
pub unsafe fn vec_dot_q(w: QuantType, k: usize, w_row: *const u8, act_row: *const u8) -> f32 {
    check_k(w, k);
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2Fma is returned only after detecting AVX2, FMA and F16C; pointer
        // contract forwarded.
        Isa::Avx2Fma => unsafe { avx2::vec_dot(w, k, w_row, act_row) },
        // SAFETY: pointer contract forwarded.
        _ => unsafe { portable::vec_dot(w, k, w_row, act_row) },
    }
}

/// `C[i*ldc + j] = vec_dot_q(w, k, wq + j*w_stride, act + i*a_stride)` for `i < m`,
/// `j < n`: `m` quantized activation rows (`a_stride` bytes apart) times `n` weight rows
/// (`w_stride` bytes apart), transposed ("NT"); `C` is overwritten.
///
/// # Safety
/// Each of the `m` activation rows and `n` weight rows must be readable as in
/// [`vec_dot_q`], and `c` writable for rows `i < m` of `n` f32 at stride `ldc`, not
/// overlapping the inputs.
///
/// # Panics
/// If `k` is not a multiple of `w.block_size()`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_nt_q(
    w: QuantType,
    m: usize,
    n: usize,
    k: usize,
    act: *const u8,
    a_stride: usize,
    wq: *const u8,
    w_stride: usize,
    c: *mut f32,
    ldc: usize,
) {
    check_k(w, k);
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `vec_dot_q`.
        Isa::Avx2Fma => unsafe { avx2::gemm_nt_q(w, m, n, k, act, a_stride, wq, w_stride, c, ldc) },
        // SAFETY: pointer contract forwarded.
        _ => unsafe { portable::gemm_nt_q(w, m, n, k, act, a_stride, wq, w_stride, c, ldc) },
    }
}
