//! Portable integer dot products of GGUF weight blocks with quantized activations.
//!
//! One function per weight type, each a direct transcription of the block layout
//! documented in `kiln_ir::quant`: integer products per (sub-)block, scaled in f32 once per
//! block, the minimum terms of `Q2_K`/`Q4_K`/`Q5_K` taken from the `Q8_K` block sums.

use kiln_ir::quant::QuantType;

use crate::activation_type;

/// f16 at `b[off..off + 2]`, widened to f32.
#[inline(always)]
fn h(b: &[u8], off: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

/// f32 at `b[off..off + 4]`.
#[inline(always)]
fn f(b: &[u8], off: usize) -> f32 {
    f32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// The `Q8_0` quants of an activation block as i32.
#[inline(always)]
fn y8(y: &[u8], i: usize) -> i32 {
    i32::from(y[2 + i] as i8)
}

/// The `Q8_K` quant `i` of an activation block as i32.
#[inline(always)]
fn yk(y: &[u8], i: usize) -> i32 {
    i32::from(y[4 + i] as i8)
}

/// The `Q8_K` block sum `s` (of quants `16 s .. 16 s + 16`).
#[inline(always)]
fn bsum(y: &[u8], s: usize) -> i32 {
    i32::from(i16::from_le_bytes([y[260 + 2 * s], y[261 + 2 * s]]))
}

/// Dot product of one weight row with one activation row; see [`crate::vec_dot_q`].
///
/// # Safety
/// As [`crate::vec_dot_q`].
pub unsafe fn vec_dot(w: QuantType, k: usize, w_row: *const u8, act_row: *const u8) -> f32 {
    let at = activation_type(w);
    let nb = k / w.block_size();
    // SAFETY: the caller guarantees a whole row of each.
    let (x, y) = unsafe {
        (
            std::slice::from_raw_parts(w_row, nb * w.block_bytes()),
            std::slice::from_raw_parts(act_row, nb * at.block_bytes()),
        )
    };
    let block: fn(&[u8], &[u8]) -> f32 = match w {
        QuantType::Q4_0 => q4_0,
        QuantType::Q4_1 => q4_1,
        QuantType::Q5_0 => q5_0,
        QuantType::Q5_1 => q5_1,
        QuantType::Q8_0 => q8_0,
        QuantType::Q2_K => q2_k,
        QuantType::Q3_K => q3_k,
        QuantType::Q4_K => q4_k,
        QuantType::Q5_K => q5_k,
        QuantType::Q6_K => q6_k,
        QuantType::Q8_K => q8_k,
    };
    x.chunks_exact(w.block_bytes())
        .zip(y.chunks_exact(at.block_bytes()))
        .map(|(xb, yb)| block(xb, yb))
        .sum()
}

/// `C[i*ldc + j] = vec_dot(weight row j, activation row i)`; see [`crate::gemm_nt_q`].
///
/// # Safety
/// As [`crate::gemm_nt_q`].
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
    for i in 0..m {
        for j in 0..n {
            // SAFETY: row i of the activations, row j of the weights and element (i, j)
            // of C are valid (caller contract).
            unsafe {
                *c.add(i * ldc + j) = vec_dot(w, k, wq.add(j * w_stride), act.add(i * a_stride));
            }
        }
    }
}

fn q4_0(x: &[u8], y: &[u8]) -> f32 {
    let mut s = 0i32;
    for i in 0..16 {
        let b = x[2 + i];
        s += (i32::from(b & 15) - 8) * y8(y, i) + (i32::from(b >> 4) - 8) * y8(y, i + 16);
    }
    h(x, 0) * h(y, 0) * s as f32
}

fn q4_1(x: &[u8], y: &[u8]) -> f32 {
    let (mut s, mut sy) = (0i32, 0i32);
    for i in 0..16 {
        let b = x[4 + i];
        s += i32::from(b & 15) * y8(y, i) + i32::from(b >> 4) * y8(y, i + 16);
        sy += y8(y, i) + y8(y, i + 16);
    }
    let dy = h(y, 0);
    h(x, 0) * dy * s as f32 + h(x, 2) * dy * sy as f32
}

/// The 5-bit quant `e` of a `Q5_0`/`Q5_1` block with high bits `qh` and nibbles at `qs`.
#[inline(always)]
fn q5(x: &[u8], qh: u32, qs: usize, e: usize) -> i32 {
    let low = (x[qs + e % 16] >> (4 * (e / 16))) & 15;
    i32::from(low) | (((qh >> e) & 1) << 4) as i32
}

fn q5_0(x: &[u8], y: &[u8]) -> f32 {
    let qh = u32::from_le_bytes([x[2], x[3], x[4], x[5]]);
    let s: i32 = (0..32).map(|e| (q5(x, qh, 6, e) - 16) * y8(y, e)).sum();
    h(x, 0) * h(y, 0) * s as f32
}

fn q5_1(x: &[u8], y: &[u8]) -> f32 {
    let qh = u32::from_le_bytes([x[4], x[5], x[6], x[7]]);
    let s: i32 = (0..32).map(|e| q5(x, qh, 8, e) * y8(y, e)).sum();
    let sy: i32 = (0..32).map(|e| y8(y, e)).sum();
    let dy = h(y, 0);
    h(x, 0) * dy * s as f32 + h(x, 2) * dy * sy as f32
}

fn q8_0(x: &[u8], y: &[u8]) -> f32 {
    let s: i32 = (0..32).map(|e| i32::from(x[2 + e] as i8) * y8(y, e)).sum();
    h(x, 0) * h(y, 0) * s as f32
}

fn q2_k(x: &[u8], y: &[u8]) -> f32 {
    let mut isum = 0i32;
    let mut summ = 0i32;
    for s in 0..16 {
        let sc = x[s];
        let mut sub = 0i32;
        for e in 16 * s..16 * s + 16 {
            let (hh, r) = (e / 128, e % 128);
            let q = (x[16 + 32 * hh + r % 32] >> (2 * (r / 32))) & 3;
            sub += i32::from(q) * yk(y, e);
        }
        isum += i32::from(sc & 15) * sub;
        summ += i32::from(sc >> 4) * bsum(y, s);
    }
    let dy = f(y, 0);
    dy * h(x, 80) * isum as f32 - dy * h(x, 82) * summ as f32
}

fn q3_k(x: &[u8], y: &[u8]) -> f32 {
    let mut isum = 0i32;
    for s in 0..16 {
        let low = (x[96 + s % 8] >> (4 * (s / 8))) & 15;
        let high = (x[104 + s % 4] >> (2 * (s / 4))) & 3;
        let scale = i32::from(low | (high << 4)) - 32;
        let mut sub = 0i32;
        for e in 16 * s..16 * s + 16 {
            let (hh, r) = (e / 128, e % 128);
            let low = i32::from((x[32 + 32 * hh + r % 32] >> (2 * (r / 32))) & 3);
            let high_set = (x[e % 32] >> (e / 32)) & 1 == 1;
            let q = if high_set { low } else { low - 4 };
            sub += q * yk(y, e);
        }
        isum += scale * sub;
    }
    f(y, 0) * h(x, 108) * isum as f32
}

/// The eight 6-bit scales and minimums of `Q4_K`/`Q5_K` (ggml's `get_scale_min_k4`).
fn unpack_k4(p: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..4 {
        sc[j] = p[j] & 63;
        mn[j] = p[j + 4] & 63;
        sc[j + 4] = (p[j + 8] & 15) | ((p[j] >> 6) << 4);
        mn[j + 4] = (p[j + 8] >> 4) | ((p[j + 4] >> 6) << 4);
    }
    (sc, mn)
}

/// Shared by `Q4_K` and `Q5_K`: `quant(e)` gives the unsigned quant of element `e`.
fn k4_like(x: &[u8], y: &[u8], quant: impl Fn(usize) -> i32) -> f32 {
    let (sc, mn) = unpack_k4(&x[4..16]);
    let mut isum = 0i32;
    let mut summ = 0i32;
    for s in 0..8 {
        let sub: i32 = (32 * s..32 * s + 32).map(|e| quant(e) * yk(y, e)).sum();
        isum += i32::from(sc[s]) * sub;
        summ += i32::from(mn[s]) * (bsum(y, 2 * s) + bsum(y, 2 * s + 1));
    }
    let dy = f(y, 0);
    dy * h(x, 0) * isum as f32 - dy * h(x, 2) * summ as f32
}

fn q4_k(x: &[u8], y: &[u8]) -> f32 {
    k4_like(x, y, |e| {
        let (c, r) = (e / 64, e % 64);
        i32::from((x[16 + 32 * c + r % 32] >> (4 * (r / 32))) & 15)
    })
}

fn q5_k(x: &[u8], y: &[u8]) -> f32 {
    k4_like(x, y, |e| {
        let (c, r) = (e / 64, e % 64);
        let low = (x[48 + 32 * c + r % 32] >> (4 * (r / 32))) & 15;
        let high = (x[16 + e % 32] >> (e / 32)) & 1;
        i32::from(low | (high << 4))
    })
}

fn q6_k(x: &[u8], y: &[u8]) -> f32 {
    let mut isum = 0i32;
    for s in 0..16 {
        let mut sub = 0i32;
        for e in 16 * s..16 * s + 16 {
            let (hh, r) = (e / 128, e % 128);
            let (g, l) = (r / 32, r % 32);
            let low = (x[64 * hh + 32 * (g % 2) + l] >> (4 * (g / 2))) & 15;
            let high = (x[128 + 32 * hh + l] >> (2 * g)) & 3;
            let q = i32::from(low | (high << 4)) - 32;
            sub += q * yk(y, e);
        }
        isum += i32::from(x[192 + s] as i8) * sub;
    }
    f(y, 0) * h(x, 208) * isum as f32
}

fn q8_k(x: &[u8], y: &[u8]) -> f32 {
    let s: i32 = (0..256).map(|e| i32::from(x[4 + e] as i8) * yk(y, e)).sum();
    f(x, 0) * f(y, 0) * s as f32
}
