//! Inline transcendental functions for values held as f32 (f32, f16, bf16). No call, so
//! Cranelift can schedule and hoist around them.
//!
//! - `exp` ([`exp_f32`]) is the IR's definition of `exp` on f32-held values,
//!   [`kiln_ir::numerics::exp_f32`] (f32 operations, within 1 ulp of the true value), repeated
//!   operation for operation: bit for bit the interpreter's result. It costs a fifth of the
//!   f64 evaluation below, and `exp` is the costly part of softmax and SiLU.
//! - `tanh` ([`tanh_f64_for_f32`]) is computed in f64 to about 1e-16 relative error (through
//!   [`exp_f64_for_f32`]) and rounded once, so it is the interpreter's correctly rounded
//!   value except where the f64 value lies within ~1e-16 of a rounding boundary.
//!
//! Each function has a scalar form and a vector form (`f32x4`, `f64x2`, for
//! [`super::codegen::vector`]); both run the same sequence of correctly rounded IEEE
//! operations, so the vector code computes bit for bit what the scalar code computes, lane by
//! lane. They differ only where no rounding is involved: the clamp (a compare-and-select,
//! equal to `fmax`/`fmin` for every non-NaN input; a NaN input stays NaN either way) and, in
//! f64, how `2^n` is formed from the integral `n` (a saturating conversion in the scalar form,
//! the `1.5 * 2^52` bias trick in the vector form: x86 has no `f64x2 -> i64x2` conversion
//! before AVX-512).

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::FunctionBuilder;
use kiln_ir::numerics::{EXP_F32_HIGH, EXP_F32_LN2_HI, EXP_F32_LN2_LO, EXP_F32_LOW, EXP_F32_POLY};

/// A float constant of type `ty` (`f64` or `f32`, or splat into `f64x2` / `f32x4`).
fn konst(b: &mut FunctionBuilder<'_>, ty: Type, v: f64) -> Value {
    let c = if ty.lane_type() == types::F32 {
        b.ins().f32const(v as f32)
    } else {
        b.ins().f64const(v)
    };
    if ty.is_vector() {
        b.ins().splat(ty, c)
    } else {
        c
    }
}

/// An i32 constant of type `ty` (`i32`, or splat into `i32x4`).
fn int_konst(b: &mut FunctionBuilder<'_>, ty: Type, v: i64) -> Value {
    let c = b.ins().iconst(types::I32, v);
    if ty.is_vector() {
        b.ins().splat(ty, c)
    } else {
        c
    }
}

/// `hi < x ? hi : x` style clamp of `x` into `[lo, hi]` (NaN stays NaN): for scalars a
/// `select`, for vectors a `bitselect` on the compare mask (which x86 lowers to `maxpd`/
/// `minpd`).
fn clamp(b: &mut FunctionBuilder<'_>, x: Value, lo: f64, hi: f64) -> Value {
    let ty = b.func.dfg.value_type(x);
    let (lo, hi) = (konst(b, ty, lo), konst(b, ty, hi));
    // max(x, lo): x < lo ? lo : x (false for NaN: x).
    let below = b.ins().fcmp(FloatCC::LessThan, x, lo);
    let x = pick(b, below, lo, x);
    // min(x, hi): hi < x ? hi : x.
    let above = b.ins().fcmp(FloatCC::LessThan, hi, x);
    pick(b, above, hi, x)
}

/// `c ? t : f` for a compare result `c` of scalars or vectors.
fn pick(b: &mut FunctionBuilder<'_>, c: Value, t: Value, f: Value) -> Value {
    let ty = b.func.dfg.value_type(t);
    if ty.is_vector() {
        let m = b.ins().bitcast(ty, MemFlagsData::new(), c);
        b.ins().bitselect(m, t, f)
    } else {
        b.ins().select(c, t, f)
    }
}

/// The shared core of `exp`: for a clamped `x`, the polynomial `p ~ exp(r)` and the integral
/// `n` (as a float) with `exp(x) = p * 2^n`.
fn exp_poly(b: &mut FunctionBuilder<'_>, x: Value) -> (Value, Value) {
    let ty = b.func.dfg.value_type(x);
    // x = n ln2 + r, |r| <= ln2 / 2 (Cody-Waite: ln2 in two parts).
    let log2e = konst(b, ty, std::f64::consts::LOG2_E);
    let t = b.ins().fmul(x, log2e);
    let n = b.ins().nearest(t);
    let ln2_hi = konst(b, ty, f64::from_bits(0x3fe6_2e42_fee0_0000));
    let ln2_lo = konst(b, ty, f64::from_bits(0x3dea_39ef_3579_3c76));
    let nh = b.ins().fmul(n, ln2_hi);
    let r = b.ins().fsub(x, nh);
    let nl = b.ins().fmul(n, ln2_lo);
    let r = b.ins().fsub(r, nl);
    // exp(r) by its Taylor series to r^11 (truncation below 1e-14 relative for |r| <= 0.35,
    // far below f32's half ulp), evaluated in Estrin's scheme: a short dependency chain.
    let c: Vec<Value> = (0..12)
        .map(|k| {
            let fact: f64 = (1..=k).map(f64::from).product();
            konst(b, ty, 1.0 / fact)
        })
        .collect();
    let r2 = b.ins().fmul(r, r);
    let r4 = b.ins().fmul(r2, r2);
    let r8 = b.ins().fmul(r4, r4);
    // Pairs c[2i] + c[2i+1] r.
    let pairs: Vec<Value> = (0..6)
        .map(|i| {
            let t = b.ins().fmul(c[2 * i + 1], r);
            b.ins().fadd(c[2 * i], t)
        })
        .collect();
    let quad = |b: &mut FunctionBuilder<'_>, lo: Value, hi: Value| {
        let t = b.ins().fmul(hi, r2);
        b.ins().fadd(lo, t)
    };
    let q0 = quad(b, pairs[0], pairs[1]);
    let q1 = quad(b, pairs[2], pairs[3]);
    let q2 = quad(b, pairs[4], pairs[5]);
    let t = b.ins().fmul(q1, r4);
    let lo = b.ins().fadd(q0, t);
    let t = b.ins().fmul(q2, r8);
    let p = b.ins().fadd(lo, t);
    (p, n)
}

/// `exp(x)` of an `f32` or `f32x4` `x`: [`kiln_ir::numerics::exp_f32`], operation for
/// operation (its docs give the steps), so bit for bit the interpreter's value.
pub fn exp_f32(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    let ity = if ty.is_vector() {
        types::I32X4
    } else {
        types::I32
    };
    let x = clamp(b, x, EXP_F32_LOW.into(), EXP_F32_HIGH.into());
    // x = n ln2 + r, |r| <= ln2 / 2.
    let log2e = konst(b, ty, std::f32::consts::LOG2_E.into());
    let t = b.ins().fmul(x, log2e);
    let n = b.ins().nearest(t);
    let hi = konst(b, ty, EXP_F32_LN2_HI.into());
    let lo = konst(b, ty, EXP_F32_LN2_LO.into());
    let nh = b.ins().fmul(n, hi);
    let r = b.ins().fsub(x, nh);
    let nl = b.ins().fmul(n, lo);
    let r = b.ins().fsub(r, nl);
    // exp(r) = 1 + (r + r^2 q(r)), q by Horner.
    let mut q = konst(b, ty, f32::from_bits(EXP_F32_POLY[4]) as f64);
    for &c in EXP_F32_POLY[..4].iter().rev() {
        let c = konst(b, ty, f32::from_bits(c) as f64);
        let m = b.ins().fmul(q, r);
        q = b.ins().fadd(m, c);
    }
    let r2 = b.ins().fmul(r, r);
    let y = b.ins().fmul(r2, q);
    let y = b.ins().fadd(y, r);
    let one = konst(b, ty, 1.0);
    let p = b.ins().fadd(y, one);
    // 2^n as 2^n1 * 2^n2 (n1 = floor(n / 2)); the saturating conversion maps NaN to 0.
    let ni = b.ins().fcvt_to_sint_sat(ity, n);
    let n1 = b.ins().sshr_imm_u(ni, 1);
    let n2 = b.ins().isub(ni, n1);
    let bias = int_konst(b, ity, 127);
    let scale = |b: &mut FunctionBuilder<'_>, e: Value| {
        let biased = b.ins().iadd(e, bias);
        let bits = b.ins().ishl_imm_u(biased, 23);
        b.ins().bitcast(ty, MemFlagsData::new(), bits)
    };
    let s1 = scale(b, n1);
    let s2 = scale(b, n2);
    let p = b.ins().fmul(p, s1);
    b.ins().fmul(p, s2)
}

/// `exp(x)` for an f64 `x` whose result is only needed to f32 range (`tanh`'s core): `x` is
/// clamped to `[EXP_F32_LOW, EXP_F32_HIGH]`, as [`exp_f32`] clamps (below, every f32-held
/// format rounds to 0; above, to infinity), NaN stays NaN.
fn exp_f64_for_f32(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    let x = clamp(b, x, EXP_F32_LOW.into(), EXP_F32_HIGH.into());
    let (p, n) = exp_poly(b, x);
    // 2^n from its exponent bits (n is within [-159, 129]).
    let ni = b.ins().fcvt_to_sint_sat(types::I64, n);
    let biased = b.ins().iadd_imm_s(ni, 1023);
    let bits = b.ins().ishl_imm_u(biased, 52);
    let scale = b.ins().bitcast(types::F64, MemFlagsData::new(), bits);
    b.ins().fmul(p, scale)
}

/// [`exp_f64_for_f32`] on both lanes of an `f64x2`, bit for bit the same per lane.
fn exp_f64x2_for_f32(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    let x = clamp(b, x, EXP_F32_LOW.into(), EXP_F32_HIGH.into());
    let (p, n) = exp_poly(b, x);
    // 2^n: adding 1.5 * 2^52 puts the integral n (|n| < 2^51) in the low mantissa bits, so
    // the sum's bits are 0x4338_0000_0000_0000 + n; rebias to n + 1023 and shift into the
    // exponent field. (A NaN n gives garbage bits, multiplied into the NaN p: NaN.)
    let magic = konst(b, types::F64X2, 6_755_399_441_055_744.0);
    let m = b.ins().fadd(n, magic);
    let bits = b.ins().bitcast(types::I64X2, MemFlagsData::new(), m);
    let rebias = b.ins().iconst(types::I64, 1023 - 0x4338_0000_0000_0000);
    let rebias = b.ins().splat(types::I64X2, rebias);
    let biased = b.ins().iadd(bits, rebias);
    let bits = b.ins().ishl_imm_u(biased, 52);
    let scale = b.ins().bitcast(types::F64X2, MemFlagsData::new(), bits);
    b.ins().fmul(p, scale)
}

/// `tanh(x)` for an f64 `x`, to f32 needs: `x` for tiny `|x|` (a cubic term), else
/// `sign(x) (1 - 2 / (exp(2|x|) + 1))`.
pub fn tanh_f64_for_f32(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    tanh_any(b, x)
}

/// [`tanh_f64_for_f32`] on both lanes of an `f64x2`, bit for bit the same per lane.
pub fn tanh_f64x2_for_f32(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    tanh_any(b, x)
}

fn tanh_any(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    let ty = b.func.dfg.value_type(x);
    let a = b.ins().fabs(x);
    let two = konst(b, ty, 2.0);
    let a2 = b.ins().fmul(a, two);
    let e = if ty == types::F64 {
        exp_f64_for_f32(b, a2)
    } else {
        exp_f64x2_for_f32(b, a2)
    };
    let one = konst(b, ty, 1.0);
    let d = b.ins().fadd(e, one);
    let q = b.ins().fdiv(two, d);
    let t = b.ins().fsub(one, q);
    let t = copysign(b, t, x);
    // Small |x|: x (1 - x^2/3) (relative error below 1e-13 for |x| < 1e-3; keeps -0).
    let x2 = b.ins().fmul(x, x);
    let third = konst(b, ty, 1.0 / 3.0);
    let c = b.ins().fmul(x2, third);
    let f = b.ins().fsub(one, c);
    let small_v = b.ins().fmul(x, f);
    let limit = konst(b, ty, 1e-3);
    let small = b.ins().fcmp(FloatCC::LessThan, a, limit);
    pick(b, small, small_v, t)
}

/// The magnitude of `t` with the sign of `s` (`fcopysign`, which x86 lowers for scalars
/// only: vectors use the sign-bit mask).
fn copysign(b: &mut FunctionBuilder<'_>, t: Value, s: Value) -> Value {
    let ty = b.func.dfg.value_type(t);
    if !ty.is_vector() {
        return b.ins().fcopysign(t, s);
    }
    let it = types::I64X2;
    let sign = b.ins().iconst(types::I64, i64::MIN);
    let sign = b.ins().splat(it, sign);
    let ti = b.ins().bitcast(it, MemFlagsData::new(), t);
    let si = b.ins().bitcast(it, MemFlagsData::new(), s);
    let mag = b.ins().band_not(ti, sign);
    let sg = b.ins().band(si, sign);
    let r = b.ins().bor(mag, sg);
    b.ins().bitcast(ty, MemFlagsData::new(), r)
}
