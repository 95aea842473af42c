//! Inline transcendental functions for values held as f32 (f32, f16, bf16): computed in f64
//! to about 1e-16 relative error and rounded once, so the result is the interpreter's
//! correctly rounded `round(exp(x))` except in the rare case where the f64 value lies within
//! ~1e-16 of a rounding boundary. No call, so Cranelift can schedule and hoist around it.
//!
//! Each function has a scalar form (an `f64` value) and a vector form (an `f64x2` value, for
//! [`super::codegen::vector`]); both run the same sequence of correctly rounded IEEE
//! operations (the shared `exp_poly` core), so the vector code computes bit for bit what
//! the scalar code computes, lane by lane. They differ only where no rounding is involved:
//! the clamp (a compare-and-select, equal to `fmax`/`fmin` for every non-NaN input; a NaN
//! input stays NaN either way) and how `2^n` is formed from the integral `n` (a saturating
//! conversion in the scalar form, the `1.5 * 2^52` bias trick in the vector form: x86 has no
//! `f64x2 -> i64x2` conversion before AVX-512).

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::FunctionBuilder;

/// An f64 constant of type `ty` (`f64`, or splat into `f64x2`).
fn konst(b: &mut FunctionBuilder<'_>, ty: Type, v: f64) -> Value {
    let c = b.ins().f64const(v);
    if ty == types::F64 {
        c
    } else {
        b.ins().splat(ty, c)
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

/// The lower clamp of [`exp_f64_for_f32`]: `exp` of anything below rounds to +0 in every
/// f32-held format (f32's smallest subnormal is about `exp(-103.3)`).
pub const EXP_F32_ZERO_BELOW: f64 = -110.0;

/// `exp(x)` for an f64 `x` whose result is only needed to f32 range: `x` is clamped to
/// `[-110, 89]` (below, every f32-held format rounds to 0; above, to infinity), NaN stays
/// NaN.
pub fn exp_f64_for_f32(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    let x = clamp(b, x, EXP_F32_ZERO_BELOW, 89.0);
    let (p, n) = exp_poly(b, x);
    // 2^n from its exponent bits (n is within [-159, 129]).
    let ni = b.ins().fcvt_to_sint_sat(types::I64, n);
    let biased = b.ins().iadd_imm_s(ni, 1023);
    let bits = b.ins().ishl_imm_u(biased, 52);
    let scale = b.ins().bitcast(types::F64, MemFlagsData::new(), bits);
    b.ins().fmul(p, scale)
}

/// [`exp_f64_for_f32`] on both lanes of an `f64x2`, bit for bit the same per lane.
pub fn exp_f64x2_for_f32(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    let x = clamp(b, x, EXP_F32_ZERO_BELOW, 89.0);
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
