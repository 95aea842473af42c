//! Portable dot products of GGUF weight blocks with f32 activations.
//!
//! Each block is dequantized by `kiln_ir`'s reference ([`kiln_ir::quant::dequantize_block`])
//! into a small buffer and dotted with the activations (eight partial sums, which
//! compilers vectorize): the obviously-right fused form, which the SIMD kernels match to
//! rounding.

use kiln_ir::quant::{dequantize_block, QuantType};

/// `sum_i w[i] * a[i]` in f32 (eight interleaved partial sums; lengths multiples of 8).
#[inline(always)]
fn dot(w: &[f32], a: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (wc, ac) in w.chunks_exact(8).zip(a.chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += wc[l] * ac[l];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// Portable `gemm_nt_qf32` (`k` already checked).
///
/// # Safety
/// Contract of [`crate::gemm_nt_qf32`].
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm(
    w: QuantType,
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    wq: *const u8,
    w_stride: usize,
    c: *mut f32,
    ldc: usize,
) {
    let (bs, bb) = (w.block_size(), w.block_bytes());
    let nb = k / bs;
    let mut buf = [0.0f32; 256];
    let buf = &mut buf[..bs];
    for j in 0..n {
        // SAFETY: weight row j holds nb blocks (caller contract).
        let x = unsafe { std::slice::from_raw_parts(wq.add(j * w_stride), nb * bb) };
        for i in 0..m {
            // SAFETY: activation row i holds k f32 (caller contract).
            let y = unsafe { std::slice::from_raw_parts(a.add(i * lda), k) };
            let mut acc = 0.0f32;
            for (xb, yb) in x.chunks_exact(bb).zip(y.chunks_exact(bs)) {
                dequantize_block(w, xb, buf).expect("one whole block");
                acc += dot(buf, yb);
            }
            // SAFETY: (i, j) is inside C.
            unsafe { *c.add(i * ldc + j) = acc };
        }
    }
}
