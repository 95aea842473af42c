//! Scalar numerics shared by everything that must agree with the reference interpreter bit for
//! bit: rounding to each float dtype, integer wrapping, casts, and the scalar functions of the
//! elementwise ops, all computed in f64 (floats) or i64 (integers) as `crate::interp` documents.
//! The interpreter and the loop-IR evaluator both call these; backends are tested against them.
//!
//! One function is defined by an algorithm rather than as the correctly rounded value: `exp`
//! of an f32-held value (f32, f16, bf16) is [`exp_f32`], a fixed sequence of f32 operations
//! within 1 ulp of the true value (the cost of the correctly rounded one is 4-5x, and `exp`
//! dominates softmax and SiLU). A backend that runs the same sequence matches bit for bit; one
//! that cannot (a GPU's native `exp`) is compared with a tolerance.

use crate::dtype::DType;
use crate::op::{BinaryOp, UnaryOp};

/// A float unary op on a value of dtype `d`, rounded to `d`: [`unary_float`] rounded once, except
/// `exp` of an f32-held value, which is [`exp_f32`] (then rounded to f16 / bf16).
pub fn unary_rounded(u: UnaryOp, d: DType, x: f64) -> f64 {
    if u == UnaryOp::Exp && matches!(d, DType::F32 | DType::F16 | DType::BF16) {
        round_float(d, exp_f32(x as f32) as f64)
    } else {
        round_float(d, unary_float(u, x))
    }
}

/// `ln 2` in two parts for [`exp_f32`]'s reduction: the high part has 9 significant bits, so
/// `n * EXP_F32_LN2_HI` is exact for every `|n| <= 2^15`.
pub const EXP_F32_LN2_HI: f32 = 355.0 / 512.0;

/// The low part of `ln 2` (`ln 2 - EXP_F32_LN2_HI`, rounded to f32).
pub const EXP_F32_LN2_LO: f32 = (std::f64::consts::LN_2 - EXP_F32_LN2_HI as f64) as f32;

/// The coefficients `c0..c4` of [`exp_f32`]'s `exp(r) ~ 1 + r + r^2 (c0 + c1 r + .. + c4 r^4)`
/// on `|r| <= ln2 / 2`, as f32 bits: a weighted minimax fit of `(exp(r) - 1 - r) / r^2` (relative
/// error of `exp(r)` below 3.1e-9 before rounding; `scripts/expf_fit.py`).
pub const EXP_F32_POLY: [u32; 5] = [
    0x3eff_fffe,
    0x3e2a_aa49,
    0x3d2a_ac79,
    0x3c09_1d10,
    0x3ab5_11e6,
];

/// Inputs below this give +0 (f32's smallest subnormal is about `exp(-103.3)`); inputs are
/// clamped to it.
pub const EXP_F32_LOW: f32 = -110.0;

/// Inputs above this give +inf (f32's largest value is about `exp(88.72)`); inputs are clamped
/// to it.
pub const EXP_F32_HIGH: f32 = 89.0;

/// Kiln's `exp` of an f32: every op an IEEE f32 operation, in this order (backends repeat it).
///
/// 1. Clamp `x` into `[EXP_F32_LOW, EXP_F32_HIGH]` (NaN stays NaN).
/// 2. `n = round_ties_even(x * log2(e))`, `r = (x - n * LN2_HI) - n * LN2_LO` (`|r| <= ln2/2`;
///    the first product and difference are exact).
/// 3. `q` = the polynomial [`EXP_F32_POLY`] by Horner in `r`; `p = (r * r * q + r) + 1`.
/// 4. `p * 2^n1 * 2^n2` with `n1 = floor(n / 2)`, `n2 = n - n1` (both factors normal powers of
///    two: the first product is exact, the second rounds once, subnormal results included;
///    overflow gives +inf).
///
/// Over every f32 input in `[-104, 89]` the result is within 1 ulp of the correctly rounded
/// `exp` and equal to it for 99.19% of inputs (test `exp_f32_error` in this crate, exhaustive
/// with `--ignored`); NaN, +-inf, overflow, underflow and +-0 give the exact results.
pub fn exp_f32(x: f32) -> f32 {
    // NaN stays NaN.
    let x = x.clamp(EXP_F32_LOW, EXP_F32_HIGH);
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = x - n * EXP_F32_LN2_HI;
    let r = r - n * EXP_F32_LN2_LO;
    let c = EXP_F32_POLY.map(f32::from_bits);
    let mut q = c[4];
    for &ci in c[..4].iter().rev() {
        q = q * r + ci;
    }
    let p = (r * r) * q + r + 1.0;
    // `as i32` saturates and maps NaN to 0 (like the backends' saturating conversion): a NaN
    // `p` stays NaN.
    let ni = n as i32;
    let n1 = ni >> 1;
    let n2 = ni - n1;
    let pow2 = |e: i32| f32::from_bits(((e + 127) as u32) << 23);
    p * pow2(n1) * pow2(n2)
}

/// One float function of [`UnaryOp`], in f64 (rounding happens after).
pub fn unary_float(u: UnaryOp, x: f64) -> f64 {
    match u {
        UnaryOp::Neg => -x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
        UnaryOp::Recip => 1.0 / x,
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Erf => libm::erf(x),
        UnaryOp::Floor => x.floor(),
        UnaryOp::Ceil => x.ceil(),
        UnaryOp::Round => x.round_ties_even(),
        UnaryOp::Sign => sign_float(x),
        // Rejected for floats by type inference.
        UnaryOp::Not => f64::NAN,
    }
}

pub fn sign_float(x: f64) -> f64 {
    if x.is_nan() {
        x
    } else if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// Floor division; `x / 0 == 0`; `MIN / -1` wraps to `MIN`.
pub fn floor_div(a: i64, b: i64) -> i64 {
    if b == 0 {
        return 0;
    }
    let q = a.wrapping_div(b);
    if a.wrapping_rem(b) != 0 && ((a < 0) != (b < 0)) {
        q.wrapping_sub(1)
    } else {
        q
    }
}

/// Floor modulo with the sign of the divisor; `x % 0 == 0`.
pub fn floor_mod(a: i64, b: i64) -> i64 {
    if b == 0 {
        return 0;
    }
    let r = a.wrapping_rem(b);
    if r != 0 && ((r < 0) != (b < 0)) {
        r.wrapping_add(b)
    } else {
        r
    }
}

pub fn compare<T: PartialOrd>(b: BinaryOp, x: T, y: T) -> bool {
    match b {
        BinaryOp::Eq => x == y,
        BinaryOp::Ne => x != y,
        BinaryOp::Lt => x < y,
        BinaryOp::Le => x <= y,
        BinaryOp::Gt => x > y,
        _ => x >= y,
    }
}

pub fn binary_float(b: BinaryOp, x: f64, y: f64) -> f64 {
    match b {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => x / y,
        BinaryOp::Pow => x.powf(y),
        BinaryOp::Max | BinaryOp::Min if x.is_nan() || y.is_nan() => f64::NAN,
        BinaryOp::Max => {
            if x >= y {
                x
            } else {
                y
            }
        }
        BinaryOp::Min => {
            if x <= y {
                x
            } else {
                y
            }
        }
        BinaryOp::Mod => x - (x / y).floor() * y,
        // Comparisons and logical ops are handled by the caller.
        _ => f64::NAN,
    }
}

pub fn binary_int(b: BinaryOp, x: i64, y: i64) -> i64 {
    match b {
        BinaryOp::Add => x.wrapping_add(y),
        BinaryOp::Sub => x.wrapping_sub(y),
        BinaryOp::Mul => x.wrapping_mul(y),
        BinaryOp::Div => floor_div(x, y),
        BinaryOp::Mod => floor_mod(x, y),
        BinaryOp::Max => x.max(y),
        BinaryOp::Min => x.min(y),
        BinaryOp::And => x & y,
        BinaryOp::Or => x | y,
        BinaryOp::Xor => x ^ y,
        // Pow and comparisons are handled by the caller.
        _ => 0,
    }
}

/// A float as an integer dtype: truncated toward zero, saturated to the range, NaN to 0.
pub fn float_to_int(d: DType, v: f64) -> i64 {
    // `as` truncates toward zero, saturates at i64's range and maps NaN to 0.
    let t = v as i64;
    let (lo, hi) = d.int_range().unwrap_or((i64::MIN, i64::MAX));
    t.clamp(lo, hi)
}

/// `2^k` for `-1022 <= k <= 1023`.
pub fn pow2(k: i32) -> f64 {
    f64::from_bits(((k + 1023) as u64) << 52)
}

/// Rounds `v` to the nearest value of a binary floating-point format with `p` significand
/// bits (the implicit bit included), smallest normal exponent `emin` and largest exponent
/// `emax`, ties to even, overflowing to infinity — a single, correct rounding (unlike a trip
/// through f32, which can round twice).
pub fn round_to_format(v: f64, p: i32, emin: i32, emax: i32) -> f64 {
    if !v.is_finite() || v == 0.0 {
        return v;
    }
    let a = v.abs();
    let biased = ((a.to_bits() >> 52) & 0x7ff) as i32;
    // f64 subnormals lie far below every format's emin.
    let e = (biased - 1023).max(emin);
    let s = e - (p - 1);
    let r = (a * pow2(-s)).round_ties_even() * pow2(s);
    let r = if r >= pow2(emax + 1) {
        f64::INFINITY
    } else {
        r
    };
    r.copysign(v)
}

/// Rounds an f64 to the nearest value of the float dtype `d` (ties to even).
pub fn round_float(d: DType, v: f64) -> f64 {
    match d {
        DType::F32 => f64::from(v as f32),
        DType::F16 => round_to_format(v, 11, -14, 15),
        DType::BF16 => round_to_format(v, 8, -126, 127),
        _ => v,
    }
}

/// An integer as the nearest value of the float dtype `d` (one rounding for f32 and f64).
pub fn int_to_float(d: DType, v: i64) -> f64 {
    match d {
        DType::F32 => f64::from(v as f32),
        DType::F64 => v as f64,
        _ => round_float(d, v as f64),
    }
}

/// Wraps an integer to the width of the integer dtype `d` (two's complement).
pub fn wrap_int(d: DType, v: i64) -> i64 {
    match d {
        DType::I8 => i64::from(v as i8),
        DType::I16 => i64::from(v as i16),
        DType::I32 => i64::from(v as i32),
        DType::U8 => i64::from(v as u8),
        DType::U32 => i64::from(v as u32),
        _ => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `exp_f32` against the correctly rounded `exp` over the f32 bit patterns of
    /// `[-104, 89]` taken every `stride`-th: (largest ulp distance, inputs off by any).
    fn exp_f32_error(stride: usize) -> (u32, usize, usize) {
        let (mut worst, mut off, mut n) = (0u32, 0usize, 0usize);
        for (sign, top) in [(0u32, 89f32.to_bits()), (0x8000_0000, 104f32.to_bits())] {
            for bits in (0..=top).step_by(stride) {
                let x = f32::from_bits(bits | sign);
                let want = (x as f64).exp() as f32;
                let got = exp_f32(x);
                let d = (got.to_bits() as i64 - want.to_bits() as i64).unsigned_abs() as u32;
                worst = worst.max(d);
                off += (d != 0) as usize;
                n += 1;
            }
        }
        (worst, off, n)
    }

    #[test]
    fn exp_f32_is_within_an_ulp() {
        let (worst, off, n) = exp_f32_error(997);
        assert!(worst <= 1, "{worst} ulps");
        // 0.81% over every input (the exhaustive test); the sample must not be far off.
        assert!(off * 100 <= n * 2, "{off} of {n} off by an ulp");
        for (x, want) in [
            (0.0f32, 1.0f32),
            (-0.0, 1.0),
            (f32::INFINITY, f32::INFINITY),
            (f32::NEG_INFINITY, 0.0),
            (88.73, f32::INFINITY),
            (f32::MAX, f32::INFINITY),
            (-104.0, 0.0),
            (-200.0, 0.0),
            (1.0, std::f32::consts::E),
        ] {
            assert_eq!(exp_f32(x).to_bits(), want.to_bits(), "exp({x})");
        }
        assert!(exp_f32(f32::NAN).is_nan());
        // Near the largest finite result, and the smallest subnormal one.
        assert!(exp_f32(88.72283).is_finite());
        assert_eq!(exp_f32(-103.27893).to_bits(), 1);
    }

    /// Every input (2.2e9 of them; about a minute in release): `cargo test --release -p
    /// kiln-ir -- --ignored exp_f32_exhaustive`.
    #[test]
    #[ignore]
    fn exp_f32_exhaustive() {
        let (worst, off, n) = exp_f32_error(1);
        eprintln!(
            "worst {worst} ulps, {off} of {n} off ({:.2}%)",
            100.0 * off as f64 / n as f64
        );
        assert!(worst <= 1);
    }

    #[test]
    fn rounding_is_single_and_to_even() {
        // 1 + 2^-8 + 2^-40 is just above the midpoint between bf16 1.0 and 1 + 2^-7.
        let v = 1.0 + pow2(-8) + pow2(-40);
        assert_eq!(round_float(DType::BF16, v), 1.0 + pow2(-7));
        assert_eq!(round_float(DType::BF16, 1.0 + pow2(-8)), 1.0);
        assert_eq!(round_float(DType::F16, 65504.0), 65504.0);
        assert_eq!(round_float(DType::F16, 65519.0), 65504.0);
        assert_eq!(round_float(DType::F16, 65520.0), f64::INFINITY);
        assert_eq!(round_float(DType::F16, -65520.0), f64::NEG_INFINITY);
        // Smallest f16 subnormal is 2^-24; half of it rounds to even (zero), a bit more up.
        assert_eq!(round_float(DType::F16, pow2(-25)), 0.0);
        assert_eq!(round_float(DType::F16, pow2(-25) * 1.5), pow2(-24));
        assert!(round_float(DType::F16, -1e-30).is_sign_negative());
        assert!(round_float(DType::BF16, f64::NAN).is_nan());
        assert_eq!(wrap_int(DType::I8, 128), -128);
        assert_eq!(wrap_int(DType::U32, -1), 4294967295);
    }
}
