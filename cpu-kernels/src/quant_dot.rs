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

/// From this many activation rows on, [`gemm_nt_q`] multiplies in f32 (AVX2 path).
pub const VIA_F32_MIN_M: usize = 16;

/// Weight rows dequantized per f32 panel in the f32 route of [`gemm_nt_q`].
#[cfg(target_arch = "x86_64")]
const F32_PANEL_ROWS: usize = 256;

/// [`gemm_nt_q`] through f32: dequantize the activations, then panels of weight rows, and
/// multiply each panel with [`crate::gemm_nt_f32`].
///
/// # Safety
/// Contract of [`gemm_nt_q`].
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_nt_q_via_f32(
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
    if k == 0 {
        for i in 0..m {
            // SAFETY: row i of C has n writable f32 (caller contract).
            unsafe { std::ptr::write_bytes(c.add(i * ldc), 0, n) };
        }
        return;
    }
    let at = crate::activation_type(w);
    let mut a = vec![0.0f32; m * k];
    for (i, row) in a.chunks_exact_mut(k).enumerate() {
        // SAFETY: activation row i holds `k` elements of `at` (caller contract); `row`
        // holds k f32.
        unsafe { crate::dequantize_row(at, k, act.add(i * a_stride), row.as_mut_ptr()) };
    }
    let rows = F32_PANEL_ROWS.min(n);
    let mut panel = vec![0.0f32; rows * k];
    let mut j0 = 0;
    while j0 < n {
        let r = rows.min(n - j0);
        for t in 0..r {
            // SAFETY: weight row j0 + t holds `k` elements of `w`; the panel row k f32.
            unsafe {
                crate::dequantize_row(
                    w,
                    k,
                    wq.add((j0 + t) * w_stride),
                    panel.as_mut_ptr().add(t * k),
                )
            };
        }
        // SAFETY: A is m×k, the panel r×k, and columns j0..j0 + r of C are writable.
        unsafe { crate::gemm_nt_f32(m, r, k, a.as_ptr(), k, panel.as_ptr(), k, c.add(j0), ldc) };
        j0 += r;
    }
}

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
/// Few activation rows (decode) run the integer dot products, four weight rows per pass
/// over an activation row. From [`VIA_F32_MIN_M`] rows on (prefill) the AVX2 path instead
/// dequantizes the activations and panels of weight rows to f32 and runs
/// [`crate::gemm_nt_f32`]: the same products (of the same dequantized values) rounded
/// differently, and measured faster on Zen 3 than the integer kernels at those sizes.
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
        // SAFETY: forwarded contract.
        Isa::Avx2Fma if m >= VIA_F32_MIN_M => unsafe {
            gemm_nt_q_via_f32(w, m, n, k, act, a_stride, wq, w_stride, c, ldc)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `vec_dot_q`.
        Isa::Avx2Fma => unsafe { avx2::gemm_nt_q(w, m, n, k, act, a_stride, wq, w_stride, c, ldc) },
        // SAFETY: pointer contract forwarded.
        _ => unsafe { portable::gemm_nt_q(w, m, n, k, act, a_stride, wq, w_stride, c, ldc) },
    }
}
