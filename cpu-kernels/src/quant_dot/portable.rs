//! Portable integer dot products of GGUF weight blocks with quantized activations.
//!
//! One function per weight type, each a direct transcription of the block layout
//! documented in `kiln_ir::quant`: a block's quants are decoded into an `i8` array (loops
//! over the layout's natural chunks, which compilers vectorize), multiplied with the
//! activation quants as integers per (sub-)block, and scaled in f32 once per block; the
//! minimum terms of `Q2_K`/`Q4_K`/`Q5_K` come from the `Q8_K` block sums.

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

/// Integer dot product of decoded weight quants with activation quant bytes.
#[inline(always)]
fn dot_i8(q: &[i8], y: &[u8]) -> i32 {
    q.iter()
        .zip(y)
        .map(|(&a, &b)| i32::from(a) * i32::from(b as i8))
        .sum()
}

/// Sum of activation quant bytes.
#[inline(always)]
fn sum_i8(y: &[u8]) -> i32 {
    y.iter().map(|&b| i32::from(b as i8)).sum()
}

/// The 32 nibbles of 16 bytes, minus `offset`: low nibbles first, then high nibbles.
#[inline(always)]
fn nibbles(qs: &[u8], offset: i8) -> [i8; 32] {
    let mut q = [0i8; 32];
    for i in 0..16 {
        q[i] = (qs[i] & 15) as i8 - offset;
        q[i + 16] = (qs[i] >> 4) as i8 - offset;
    }
    q
}

/// The 5-bit quants of `Q5_0`/`Q5_1` (nibbles at `qs`, high bits in `qh`), minus `offset`.
#[inline(always)]
fn quints(qs: &[u8], qh: u32, offset: i8) -> [i8; 32] {
    let mut q = nibbles(qs, 0);
    for (e, v) in q.iter_mut().enumerate() {
        *v = (*v | ((((qh >> e) & 1) as i8) << 4)) - offset;
    }
    q
}

fn q4_0(x: &[u8], y: &[u8]) -> f32 {
    let s = dot_i8(&nibbles(&x[2..18], 8), &y[2..34]);
    h(x, 0) * h(y, 0) * s as f32
}

fn q4_1(x: &[u8], y: &[u8]) -> f32 {
    let s = dot_i8(&nibbles(&x[4..20], 0), &y[2..34]);
    let dy = h(y, 0);
    h(x, 0) * dy * s as f32 + h(x, 2) * dy * sum_i8(&y[2..34]) as f32
}

fn q5_0(x: &[u8], y: &[u8]) -> f32 {
    let qh = u32::from_le_bytes([x[2], x[3], x[4], x[5]]);
    let s = dot_i8(&quints(&x[6..22], qh, 16), &y[2..34]);
    h(x, 0) * h(y, 0) * s as f32
}

fn q5_1(x: &[u8], y: &[u8]) -> f32 {
    let qh = u32::from_le_bytes([x[4], x[5], x[6], x[7]]);
    let s = dot_i8(&quints(&x[8..24], qh, 0), &y[2..34]);
    let dy = h(y, 0);
    h(x, 0) * dy * s as f32 + h(x, 2) * dy * sum_i8(&y[2..34]) as f32
}

fn q8_0(x: &[u8], y: &[u8]) -> f32 {
    let s: i32 = x[2..34]
        .iter()
        .zip(&y[2..34])
        .map(|(&a, &b)| i32::from(a as i8) * i32::from(b as i8))
        .sum();
    h(x, 0) * h(y, 0) * s as f32
}

fn q2_k(x: &[u8], y: &[u8]) -> f32 {
    let qs = &x[16..80];
    let mut q = [0i8; 256];
    for hh in 0..2 {
        for g in 0..4 {
            for l in 0..32 {
                q[128 * hh + 32 * g + l] = ((qs[32 * hh + l] >> (2 * g)) & 3) as i8;
            }
        }
    }
    let yq = &y[4..260];
    let mut isum = 0i32;
    let mut summ = 0i32;
    for s in 0..16 {
        let sc = x[s];
        isum += i32::from(sc & 15) * dot_i8(&q[16 * s..16 * s + 16], &yq[16 * s..16 * s + 16]);
        summ += i32::from(sc >> 4) * bsum(y, s);
    }
    let dy = f(y, 0);
    dy * h(x, 80) * isum as f32 - dy * h(x, 82) * summ as f32
}

fn q3_k(x: &[u8], y: &[u8]) -> f32 {
    let (hmask, qs) = (&x[0..32], &x[32..96]);
    let mut q = [0i8; 256];
    for hh in 0..2 {
        for g in 0..4 {
            for l in 0..32 {
                let low = ((qs[32 * hh + l] >> (2 * g)) & 3) as i8;
                let high_set = (hmask[l] >> (4 * hh + g)) & 1;
                q[128 * hh + 32 * g + l] = low - 4 * (1 - high_set as i8);
            }
        }
    }
    let yq = &y[4..260];
    let mut isum = 0i32;
    for s in 0..16 {
        let low = (x[96 + s % 8] >> (4 * (s / 8))) & 15;
        let high = (x[104 + s % 4] >> (2 * (s / 4))) & 3;
        let scale = i32::from(low | (high << 4)) - 32;
        isum += scale * dot_i8(&q[16 * s..16 * s + 16], &yq[16 * s..16 * s + 16]);
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

/// Shared by `Q4_K` and `Q5_K`, given the block's 256 decoded (unsigned) quants.
fn k4_like(x: &[u8], y: &[u8], q: &[i8; 256]) -> f32 {
    let (sc, mn) = unpack_k4(&x[4..16]);
    let yq = &y[4..260];
    let mut isum = 0i32;
    let mut summ = 0i32;
    for s in 0..8 {
        isum += i32::from(sc[s]) * dot_i8(&q[32 * s..32 * s + 32], &yq[32 * s..32 * s + 32]);
        summ += i32::from(mn[s]) * (bsum(y, 2 * s) + bsum(y, 2 * s + 1));
    }
    let dy = f(y, 0);
    dy * h(x, 0) * isum as f32 - dy * h(x, 2) * summ as f32
}

fn q4_k(x: &[u8], y: &[u8]) -> f32 {
    let qs = &x[16..144];
    let mut q = [0i8; 256];
    for c in 0..4 {
        for l in 0..32 {
            q[64 * c + l] = (qs[32 * c + l] & 15) as i8;
            q[64 * c + 32 + l] = (qs[32 * c + l] >> 4) as i8;
        }
    }
    k4_like(x, y, &q)
}

fn q5_k(x: &[u8], y: &[u8]) -> f32 {
    let (qh, qs) = (&x[16..48], &x[48..176]);
    let mut q = [0i8; 256];
    for c in 0..4 {
        for l in 0..32 {
            let h0 = ((qh[l] >> (2 * c)) & 1) << 4;
            let h1 = ((qh[l] >> (2 * c + 1)) & 1) << 4;
            q[64 * c + l] = ((qs[32 * c + l] & 15) | h0) as i8;
            q[64 * c + 32 + l] = ((qs[32 * c + l] >> 4) | h1) as i8;
        }
    }
    k4_like(x, y, &q)
}

fn q6_k(x: &[u8], y: &[u8]) -> f32 {
    let (ql, qh) = (&x[0..128], &x[128..192]);
    let mut q = [0i8; 256];
    for hh in 0..2 {
        for g in 0..4 {
            for l in 0..32 {
                let low = (ql[64 * hh + 32 * (g % 2) + l] >> (4 * (g / 2))) & 15;
                let high = (qh[32 * hh + l] >> (2 * g)) & 3;
                q[128 * hh + 32 * g + l] = (low | (high << 4)) as i8 - 32;
            }
        }
    }
    let yq = &y[4..260];
    let mut isum = 0i32;
    for s in 0..16 {
        let scale = i32::from(x[192 + s] as i8);
        isum += scale * dot_i8(&q[16 * s..16 * s + 16], &yq[16 * s..16 * s + 16]);
    }
    f(y, 0) * h(x, 208) * isum as f32
}

fn q8_k(x: &[u8], y: &[u8]) -> f32 {
    let s: i32 = x[4..260]
        .iter()
        .zip(&y[4..260])
        .map(|(&a, &b)| i32::from(a as i8) * i32::from(b as i8))
        .sum();
    f(x, 0) * f(y, 0) * s as f32
}
