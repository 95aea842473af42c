//! Inline transcendental functions for values held as f32 (f32, f16, bf16): computed in f64
//! to about 1e-16 relative error and rounded once, so the result is the interpreter's
//! correctly rounded `round(exp(x))` except in the rare case where the f64 value lies within
//! ~1e-16 of a rounding boundary. No call, so Cranelift can schedule and hoist around it.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::FunctionBuilder;

/// `exp(x)` for an f64 `x` whose result is only needed to f32 range: `x` is clamped to
/// `[-110, 89]` (below, every f32-held format rounds to 0; above, to infinity), NaN stays
/// NaN.
pub fn exp_f64_for_f32(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    let lo = b.ins().f64const(-110.0);
    let hi = b.ins().f64const(89.0);
    let x = b.ins().fmax(x, lo);
    let x = b.ins().fmin(x, hi);
    // x = n ln2 + r, |r| <= ln2 / 2 (Cody-Waite: ln2 in two parts).
    let log2e = b.ins().f64const(std::f64::consts::LOG2_E);
    let t = b.ins().fmul(x, log2e);
    let n = b.ins().nearest(t);
    let ln2_hi = b.ins().f64const(f64::from_bits(0x3fe6_2e42_fee0_0000));
    let ln2_lo = b.ins().f64const(f64::from_bits(0x3dea_39ef_3579_3c76));
    let nh = b.ins().fmul(n, ln2_hi);
    let r = b.ins().fsub(x, nh);
    let nl = b.ins().fmul(n, ln2_lo);
    let r = b.ins().fsub(r, nl);
    // exp(r) by its Taylor series to r^11 (truncation below 1e-14 relative for |r| <= 0.35,
    // far below f32's half ulp), evaluated in Estrin's scheme: a short dependency chain.
    let c: Vec<Value> = (0..12)
        .map(|k| {
            let fact: f64 = (1..=k).map(f64::from).product();
            b.ins().f64const(1.0 / fact)
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
    // 2^n from its exponent bits (n is within [-159, 129]).
    let ni = b.ins().fcvt_to_sint_sat(types::I64, n);
    let biased = b.ins().iadd_imm_s(ni, 1023);
    let bits = b.ins().ishl_imm_u(biased, 52);
    let scale = b.ins().bitcast(types::F64, MemFlagsData::new(), bits);
    b.ins().fmul(p, scale)
}

/// `tanh(x)` for an f64 `x`, to f32 needs: `x` for tiny `|x|` (a cubic term), else
/// `sign(x) (1 - 2 / (exp(2|x|) + 1))`.
pub fn tanh_f64_for_f32(b: &mut FunctionBuilder<'_>, x: Value) -> Value {
    let a = b.ins().fabs(x);
    let two = b.ins().f64const(2.0);
    let a2 = b.ins().fmul(a, two);
    let e = exp_f64_for_f32(b, a2);
    let one = b.ins().f64const(1.0);
    let d = b.ins().fadd(e, one);
    let q = b.ins().fdiv(two, d);
    let t = b.ins().fsub(one, q);
    let t = b.ins().fcopysign(t, x);
    // Small |x|: x (1 - x^2/3) (relative error below 1e-13 for |x| < 1e-3; keeps -0).
    let x2 = b.ins().fmul(x, x);
    let third = b.ins().f64const(1.0 / 3.0);
    let c = b.ins().fmul(x2, third);
    let f = b.ins().fsub(one, c);
    let small_v = b.ins().fmul(x, f);
    let limit = b.ins().f64const(1e-3);
    let small = b.ins().fcmp(FloatCC::LessThan, a, limit);
    b.ins().select(small, small_v, t)
}
