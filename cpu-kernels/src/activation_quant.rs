//! Quantization of f32 activations for the integer dot products, as ggml does it.
//!
//! Each weight type has an activation type it is multiplied with ([`activation_type`]):
//! `Q8_0` for the 32-element block types and `Q8_K` for the 256-element K types (like
//! llama.cpp's `vec_dot_type`, except that `Q4_1`/`Q5_1` use `Q8_0` rather than `Q8_1`:
//! the dot products compute the block sums of the activations themselves).
//!
//! The rounding is that of ggml's reference quantizers:
//!
//! * `Q8_0` (`quantize_row_q8_0_ref`): per 32 values `d = amax / 127`,
//!   `q = roundf(x * (1 / d))` (ties away from zero; `q = 0` when `d == 0`), `d` stored
//!   as f16.
//! * `Q8_K` (`quantize_row_q8_K_ref`): per 256 values, `max` is the value of largest
//!   magnitude (the first one on ties) *with its sign*, `iscale = -127 / max`,
//!   `q = min(127, nearest_int(iscale * x))` (ties to even), `d = 1 / iscale` stored as
//!   f32 (so `d` is negative when `max` is positive), plus sixteen i16 sums of 16 quants;
//!   an all-zero block is stored as `d = 0`, zero quants and zero sums.
//!
//! Neither produces the quant `-128`, which the AVX2 dot products rely on.

use kiln_ir::quant::QuantType;

/// The activation format the integer dot of weight type `w` uses: [`QuantType::Q8_0`]
/// for the 32-element block types (`Q4_0`, `Q4_1`, `Q5_0`, `Q5_1`, `Q8_0`) and
/// [`QuantType::Q8_K`] for the K types (`Q2_K` ..= `Q6_K`, `Q8_K`).
pub fn activation_type(w: QuantType) -> QuantType {
    match w {
        QuantType::Q4_0 | QuantType::Q4_1 | QuantType::Q5_0 | QuantType::Q5_1 | QuantType::Q8_0 => {
            QuantType::Q8_0
        }
        QuantType::Q2_K
        | QuantType::Q3_K
        | QuantType::Q4_K
        | QuantType::Q5_K
        | QuantType::Q6_K
        | QuantType::Q8_K => QuantType::Q8_K,
    }
}

/// Quantizes the `k = x.len()` f32 activations into `out` in the format
/// [`activation_type`]`(w)`, with ggml's reference rounding (see the module docs).
///
/// # Panics
/// If `k` is not a multiple of the activation type's block size (32 or 256) or
/// `out.len()` is not exactly `activation_type(w).bytes_for(k)`.
pub fn quantize_activations(w: QuantType, x: &[f32], out: &mut [u8]) {
    let at = activation_type(w);
    let bytes = at.bytes_for(x.len()).unwrap_or_else(|| {
        panic!(
            "quantize_activations: {} values is not a whole number of {at} blocks",
            x.len()
        )
    });
    assert_eq!(
        out.len(),
        bytes,
        "quantize_activations: {} values of {at} take {bytes} bytes",
        x.len()
    );
    match at {
        QuantType::Q8_0 => {
            for (xb, ob) in x.chunks_exact(32).zip(out.chunks_exact_mut(34)) {
                quantize_block_q8_0(xb.try_into().unwrap(), ob.try_into().unwrap());
            }
        }
        _ => {
            for (xb, ob) in x.chunks_exact(256).zip(out.chunks_exact_mut(292)) {
                quantize_block_q8_k(xb.try_into().unwrap(), ob.try_into().unwrap());
            }
        }
    }
}

/// One `Q8_0` block (ggml's `quantize_row_q8_0_ref`).
fn quantize_block_q8_0(x: &[f32; 32], out: &mut [u8; 34]) {
    let amax = x
        .iter()
        .fold(0.0f32, |m, v| if v.abs() > m { v.abs() } else { m });
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out[..2].copy_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
    for (o, v) in out[2..].iter_mut().zip(x) {
        *o = round_away_i8(v * id) as u8;
    }
}

/// `x.round() as i8` (ties away from zero, saturating, NaN to 0) without the `roundf` call
/// that `f32::round` is on x86-64 without SSE4.1: truncate, then step away from zero when
/// the (exact) remainder is at least one half.
#[inline(always)]
fn round_away_i8(x: f32) -> i8 {
    // Toward zero, saturating; NaN gives 0. Exact: `|t| <= |x|` and `t` is `x`'s integer
    // part where `|x| < 2^31`, so `x - t` is exact (Sterbenz) and in (-1, 1).
    let t = x as i32;
    let f = x - t as f32;
    let r = if f >= 0.5 {
        t.saturating_add(1)
    } else if f <= -0.5 {
        t.saturating_sub(1)
    } else {
        t
    };
    r.clamp(i8::MIN.into(), i8::MAX.into()) as i8
}

/// One `Q8_K` block (ggml's `quantize_row_q8_K_ref`).
fn quantize_block_q8_k(x: &[f32; 256], out: &mut [u8; 292]) {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        out.fill(0);
        return;
    }
    let iscale = -127.0 / max;
    let (head, bsums) = out.split_at_mut(260);
    for (o, v) in head[4..].iter_mut().zip(x) {
        let q = (iscale * v).round_ties_even().clamp(-128.0, 127.0);
        *o = (q as i8) as u8;
    }
    for (s, bs) in bsums.chunks_exact_mut(2).enumerate() {
        let sum: i32 = head[4 + 16 * s..4 + 16 * s + 16]
            .iter()
            .map(|&q| i32::from(q as i8))
            .sum();
        bs.copy_from_slice(&(sum as i16).to_le_bytes());
    }
    head[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::round_away_i8;

    fn check(x: f32) {
        assert_eq!(
            round_away_i8(x),
            x.round() as i8,
            "{x:e} ({:#x})",
            x.to_bits()
        );
    }

    #[test]
    fn round_away_matches_f32_round() {
        // A sweep of every bit pattern class (signs, exponents, NaNs, infinities) ...
        for bits in (0..=u32::MAX).step_by(997) {
            check(f32::from_bits(bits));
        }
        // ... and every half-integer, its neighbours and the integers in the i8 range and
        // beyond it.
        for n in -300..=300 {
            for base in [n as f32, n as f32 + 0.5] {
                let mut x = base;
                for _ in 0..4 {
                    x = x.next_down();
                }
                for _ in 0..9 {
                    check(x);
                    x = x.next_up();
                }
            }
        }
        for x in [
            0.0,
            -0.0,
            f32::MIN,
            f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ] {
            check(x);
        }
        check(0.49999997);
        check(-0.49999997);
        check(2147483520.0);
        check(-2147483648.0);
    }
}
