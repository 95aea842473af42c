//! Dot products of GGUF block-quantized weight rows with **f32** activation rows.
//!
//! The result is `sum_i w_i * x_i` with `w_i` the weight as [`kiln_ir::quant::dequantize`]
//! defines it, bit for bit, accumulated in f32: the accuracy of an f32 matrix product on
//! the dequantized weights (only the order of the sum differs), without writing them out.
//! The integer kernels of [`crate::quant_dot`] instead round the activations to 8 bits
//! first, about 0.4% RMS per product.
//!
//! No weight row is dequantized to memory. Per eight weights, the integer quants are
//! widened and converted in registers and multiplied into per-(sub-)block f32 sums, each
//! scaled once:
//!
//! | type | weight | dot with `x` over one (sub-)block |
//! | --- | --- | --- |
//! | `Q8_0`, `Q8_K` | `d q` | `d Σ q x` |
//! | `Q4_0`, `Q5_0` | `d (q - o)` | `d Σ (q - o) x`, `q - o` formed in the integer lanes |
//! | `Q3_K`, `Q6_K` | `(d sc) (q - o)` | `(d sc) Σ (q - o) x`, likewise |
//! | `Q4_1`, `Q5_1` | `d q + m` | `d Σ q x + m Σ x` |
//! | `Q2_K`, `Q4_K`, `Q5_K` | `(d sc) q - (dmin mn)` | `(d sc) Σ q x - (dmin mn) Σ x` |
//!
//! The sums of the activations `Σ x` over each (sub-)block, for the types with a
//! minimum, are computed once per activation row and shared by every weight row. The
//! first three rows are the f32 product of the dequantized weights up to the order of the
//! sum. The split of the last two cancels where the weights themselves do not: on blocks
//! that straddle zero its rounding error is up to a few times that of the f32 product
//! (still ~1e-7 of the sum of the terms' magnitudes, see the tests); forming each weight
//! by an FMA instead (`q * scale + min`, bit for bit the reference) costs one more FMA per
//! eight weights, measured 15% slower for `Q4_1` and 30-50% for the K types on Zen 3.
//!
//! On AVX2 CPUs every type has a SIMD kernel ([`avx2`]); a pass over a weight row serves up
//! to four activation rows, so each block is decoded once for all of them. Elsewhere the
//! [`portable`] kernels dequantize a block at a time with the reference and dot it (the
//! f32 product of the dequantized weights, no split).

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
pub(crate) mod portable;

use std::cell::RefCell;

use kiln_ir::quant::QuantType;

use crate::dispatch::{isa, Isa};

/// Elements per activation sum the dot of weight type `w` uses: 32 for `Q4_1`, `Q5_1`,
/// `Q4_K` and `Q5_K`, 16 for `Q2_K` (their (sub-)blocks, which have a minimum); `None` for
/// the types without a minimum.
pub const fn sum_group(w: QuantType) -> Option<usize> {
    match w {
        QuantType::Q4_1 | QuantType::Q5_1 | QuantType::Q4_K | QuantType::Q5_K => Some(32),
        QuantType::Q2_K => Some(16),
        _ => None,
    }
}

/// Number of activation sums per weight block of `w` (0 for the types without a minimum).
pub(crate) const fn sums_per_block(w: QuantType) -> usize {
    match sum_group(w) {
        Some(g) => w.block_size() / g,
        None => 0,
    }
}

/// Writes the sums of consecutive groups of `G` elements of `x` to `out`
/// (`out.len() == x.len() / G`).
fn group_sums<const G: usize>(x: &[f32], out: &mut [f32]) {
    for (g, o) in x.chunks_exact(G).zip(out.iter_mut()) {
        let mut acc = [0.0f32; 8];
        for c in g.chunks_exact(8) {
            for l in 0..8 {
                acc[l] += c[l];
            }
        }
        *o = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    }
}

/// The activation sums of `m` rows (`k` f32 each, `lda` apart) for weight type `w`, row
/// after row, `k / group` each; empty for types without a minimum.
///
/// # Safety
/// The rows must be readable.
unsafe fn activation_sums(
    w: QuantType,
    m: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    out: &mut Vec<f32>,
) {
    out.clear();
    let Some(g) = sum_group(w) else {
        return;
    };
    let per_row = k / g;
    out.resize(m * per_row, 0.0);
    for i in 0..m {
        // SAFETY: row i holds k readable f32 (caller contract).
        let x = unsafe { std::slice::from_raw_parts(a.add(i * lda), k) };
        let o = &mut out[i * per_row..(i + 1) * per_row];
        if g == 16 {
            group_sums::<16>(x, o);
        } else {
            group_sums::<32>(x, o);
        }
    }
}

thread_local! {
    /// Per-thread scratch for the activation sums.
    static SUMS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Checks that `k` is a whole number of blocks of `w`.
fn check_k(w: QuantType, k: usize) {
    assert!(
        k.is_multiple_of(w.block_size()),
        "{k} elements is not a whole number of {w} blocks"
    );
}

/// `C[i*ldc + j] = sum_e w_j[e] * a_i[e]` for `i < m`, `j < n`: `m` f32 activation rows
/// (`lda` f32 apart) times `n` weight rows of type `w` (raw GGUF blocks, `w_stride` bytes
/// apart), transposed ("NT"); `C` is overwritten. The weights are those of
/// [`kiln_ir::quant::dequantize`]; products are accumulated in f32 (see the module docs).
///
/// Meant for few activation rows (decode, short prompts): each weight row is decoded once
/// per four activation rows. Many rows are faster through dequantized panels and
/// [`crate::gemm_nt_f32`].
///
/// # Safety
/// Each of the `m` activation rows must be readable for `k` f32 (any f32 alignment), each
/// of the `n` weight rows for `w.bytes_for(k)` bytes (any alignment), and `c` writable for
/// rows `i < m` of `n` f32 at stride `ldc`, not overlapping the inputs.
///
/// # Panics
/// If `k` is not a multiple of `w.block_size()`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_nt_qf32(
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
    check_k(w, k);
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2Fma => SUMS.with(|sums| {
            let mut sums = sums.borrow_mut();
            // SAFETY: the activation rows are readable (caller contract).
            unsafe { activation_sums(w, m, k, a, lda, &mut sums) };
            let s_stride = (k / w.block_size()) * sums_per_block(w);
            // SAFETY: Avx2Fma is returned only after detecting AVX2, FMA and F16C; the
            // sums hold `m` rows of `s_stride`; the rest is the caller's contract.
            unsafe {
                avx2::gemm(
                    w,
                    m,
                    n,
                    k,
                    a,
                    lda,
                    sums.as_ptr(),
                    s_stride,
                    wq,
                    w_stride,
                    c,
                    ldc,
                )
            }
        }),
        // SAFETY: the caller's contract.
        _ => unsafe { portable::gemm(w, m, n, k, a, lda, wq, w_stride, c, ldc) },
    }
}

/// Dot product of one weight row (`k` elements of type `w`, raw GGUF blocks) with one f32
/// activation row: [`gemm_nt_qf32`] with `m = n = 1`.
///
/// # Safety
/// `w_row` readable for `w.bytes_for(k)` bytes and `x` for `k` f32.
///
/// # Panics
/// If `k` is not a multiple of `w.block_size()`.
pub unsafe fn vec_dot_qf32(w: QuantType, k: usize, w_row: *const u8, x: *const f32) -> f32 {
    let mut out = 0.0f32;
    // SAFETY: forwarded contract; `out` is one writable f32.
    unsafe { gemm_nt_qf32(w, 1, 1, k, x, k, w_row, 0, &mut out, 1) };
    out
}

/// The portable [`gemm_nt_qf32`], whatever the CPU (for tests and comparisons).
///
/// # Safety
/// As [`gemm_nt_qf32`].
///
/// # Panics
/// As [`gemm_nt_qf32`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn portable_gemm_nt_qf32(
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
    check_k(w, k);
    // SAFETY: the caller's contract.
    unsafe { portable::gemm(w, m, n, k, a, lda, wq, w_stride, c, ldc) }
}
