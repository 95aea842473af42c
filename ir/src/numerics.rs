//! Scalar numerics shared by everything that must agree with the reference interpreter bit for
//! bit: rounding to each float dtype, integer wrapping, casts, and the scalar functions of the
//! elementwise ops, all computed in f64 (floats) or i64 (integers) as `crate::interp` documents.
//! The interpreter and the loop-IR evaluator both call these; backends are tested against them.

use crate::dtype::DType;
use crate::op::{BinaryOp, UnaryOp};

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
