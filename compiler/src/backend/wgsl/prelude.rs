//! WGSL helper functions that emitted kernels call: the interpreter's integer and float rules
//! that WGSL's builtins do not have (floor division, NaN-propagating min/max, `pow` of negative
//! bases, erf, bf16 rounding, f64 storage). A kernel's module holds only the helpers it uses
//! (and what those call), in a fixed order, so the WGSL of a kernel is deterministic.

use std::collections::BTreeSet;

/// One helper: its name and its source (the helpers it calls are found in the source).
struct Helper {
    name: &'static str,
    source: &'static str,
}

const HELPERS: &[Helper] = &[
    Helper {
        name: "kiln_nan",
        source: "fn kiln_nan() -> f32 { return bitcast<f32>(0x7fc00000u); }",
    },
    Helper {
        name: "kiln_isnan",
        // By bits: WGSL's `x != x` compiles to an ordered comparison, false for NaN.
        source: "fn kiln_isnan(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }",
    },
    Helper {
        name: "kiln_idiv",
        // Python floor division; x // 0 == 0 (the interpreter's rule).
        source: "fn kiln_idiv(a: i32, b: i32) -> i32 {
    if (b == 0i) { return 0i; }
    let q = a / b;
    if ((a % b != 0i) && ((a < 0i) != (b < 0i))) { return q - 1i; }
    return q;
}",
    },
    Helper {
        name: "kiln_imod",
        // Floor modulo with the sign of the divisor; x % 0 == 0.
        source: "fn kiln_imod(a: i32, b: i32) -> i32 {
    if (b == 0i) { return 0i; }
    let r = a % b;
    if ((r != 0i) && ((r < 0i) != (b < 0i))) { return r + b; }
    return r;
}",
    },
    Helper {
        name: "kiln_fmax",
        source: "fn kiln_fmax(a: f32, b: f32) -> f32 {
    if (kiln_isnan(a) || kiln_isnan(b)) { return kiln_nan(); }
    return select(b, a, a >= b);
}",
    },
    Helper {
        name: "kiln_fmin",
        source: "fn kiln_fmin(a: f32, b: f32) -> f32 {
    if (kiln_isnan(a) || kiln_isnan(b)) { return kiln_nan(); }
    return select(b, a, a <= b);
}",
    },
    Helper {
        name: "kiln_fmod",
        source: "fn kiln_fmod(a: f32, b: f32) -> f32 { return a - floor(a / b) * b; }",
    },
    Helper {
        name: "kiln_fsign",
        source: "fn kiln_fsign(x: f32) -> f32 {
    if (x > 0.0) { return 1.0; }
    if (x < 0.0) { return -1.0; }
    if (x == 0.0) { return 0.0; }
    return x;
}",
    },
    Helper {
        name: "kiln_pow",
        // C's pow: negative bases with integral exponents, x^0 == 1, 1^y == 1.
        source: "fn kiln_pow(a: f32, b: f32) -> f32 {
    if ((b == 0.0) || (a == 1.0)) { return 1.0; }
    if (kiln_isnan(a) || kiln_isnan(b)) { return kiln_nan(); }
    let odd = floor(b) == b && abs(b) < 16777216.0 && (i32(abs(b)) & 1i) == 1i;
    if (a == 0.0) {
        // pow(+-0, y): +-inf for negative odd y, +inf for other negative y, +-0 for positive
        // odd y, +0 otherwise.
        let m = select(0.0, bitcast<f32>(0x7f800000u), b < 0.0);
        return select(m, bitcast<f32>(bitcast<u32>(m) | (bitcast<u32>(a) & 0x80000000u)), odd);
    }
    if (a > 0.0) { return exp2(b * log2(a)); }
    if (floor(b) != b) { return kiln_nan(); }
    let m = exp2(b * log2(-a));
    return select(m, -m, odd);
}",
    },
    Helper {
        name: "kiln_reduce_2pi",
        // x - k * 2 pi with k = round(x / 2 pi), 2 pi in three parts (Cody-Waite): builtin
        // sin/cos are accurate on [-pi, pi] only. Good to a few ulp for |x| < 2^16.
        source: "fn kiln_reduce_2pi(x: f32) -> f32 {
    let k = round(x * 0.15915493667125702);
    return ((x - k * 6.28125) - k * 0.0019353071693331003) - k * 1.0253376273028358e-11;
}",
    },
    Helper {
        name: "kiln_sin",
        source: "fn kiln_sin(x: f32) -> f32 { return sin(kiln_reduce_2pi(x)); }",
    },
    Helper {
        name: "kiln_cos",
        source: "fn kiln_cos(x: f32) -> f32 { return cos(kiln_reduce_2pi(x)); }",
    },
    Helper {
        name: "kiln_tanh",
        // Near 0 the Maclaurin series (builtins lose relative accuracy there: tanh(6e-8) came
        // out 9e-8 on lavapipe); beyond |x| > 10 it is +-1 in f32 (builtins may overflow
        // through exp there).
        source: "fn kiln_tanh(x: f32) -> f32 {
    let z = abs(x);
    if (z < 0.55) {
        let x2 = x * x;
        let p = 0.0035921280 - x2 * 0.0014558344;
        let q = -0.0088632355 + x2 * p;
        let r = 0.021869489 + x2 * q;
        let s = -0.053968254 + x2 * r;
        let t = 0.13333334 + x2 * s;
        let u = -0.33333334 + x2 * t;
        return x + x * x2 * u;
    }
    if (z > 10.0) { return sign(x); }
    return tanh(x);
}",
    },
    Helper {
        name: "kiln_erf",
        // |x| < 0.75: the Maclaurin series to x^19 (relative error < 1e-8 there); beyond, a
        // rational Chebyshev-style fit of erfc (|error| < 1.2e-7).
        source: "fn kiln_erf(x: f32) -> f32 {
    if (kiln_isnan(x)) { return x; }
    let z = abs(x);
    if (z < 0.75) {
        let x2 = x * x;
        var term = x;
        var sum = x;
        for (var n: i32 = 1; n < 10; n = n + 1) {
            term = -term * x2 / f32(n);
            sum = sum + term / f32(2 * n + 1);
        }
        return 1.1283791670955126 * sum;
    }
    let t = 1.0 / (1.0 + 0.5 * z);
    let p = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277))))))));
    let r = 1.0 - t * exp(p);
    return select(-r, r, x >= 0.0);
}",
    },
    Helper {
        name: "kiln_bf16",
        // Round an f32 to bf16 (ties to even), kept as an f32; NaN stays NaN.
        source: "fn kiln_bf16(x: f32) -> f32 {
    if (kiln_isnan(x)) { return x; }
    let b = bitcast<u32>(x);
    let r = (b + 0x7fffu + ((b >> 16u) & 1u)) & 0xffff0000u;
    return bitcast<f32>(r);
}",
    },
    Helper {
        name: "kiln_f16",
        // Round an f32 to f16 (ties to even, subnormals, overflow to infinity), kept as an
        // f32 (WGSL's quantizeToF16 needs the shader-f16 capability).
        source: "fn kiln_f16(x: f32) -> f32 {
    if (kiln_isnan(x)) { return x; }
    let b = bitcast<u32>(x);
    let s = b & 0x80000000u;
    let a = abs(x);
    if (a >= 65520.0) { return bitcast<f32>(s | 0x7f800000u); }
    if (a < 6.103515625e-05) {
        let m = round(a * 16777216.0) * 5.9604644775390625e-08;
        return bitcast<f32>(s | bitcast<u32>(m));
    }
    return bitcast<f32>((b + 0xfffu + ((b >> 13u) & 1u)) & 0xffffe000u);
}",
    },
    Helper {
        name: "kiln_f16_bits",
        // The f16 bits of an f32 (rounded to f16 first); pack2x16float needs shader-f16.
        source: "fn kiln_f16_bits(v: f32) -> u32 {
    let x = kiln_f16(v);
    let b = bitcast<u32>(x);
    let s = (b >> 16u) & 0x8000u;
    if (kiln_isnan(x)) { return s | 0x7e00u; }
    let a = abs(x);
    if (a > 65504.0) { return s | 0x7c00u; }
    if (a < 6.103515625e-05) { return s | u32(round(a * 16777216.0)); }
    let e = ((b >> 23u) & 0xffu) - 112u;
    return s | (e << 10u) | ((b >> 13u) & 0x3ffu);
}",
    },
    Helper {
        name: "kiln_f2i",
        // Float to integer: truncate toward zero, saturate, NaN -> 0.
        source: "fn kiln_f2i(x: f32) -> i32 {
    if (kiln_isnan(x)) { return 0i; }
    if (x >= 2147483648.0) { return 2147483647i; }
    if (x <= -2147483648.0) { return -2147483647i - 1i; }
    return i32(x);
}",
    },
    Helper {
        name: "kiln_f64_to_f32",
        // The f32 nearest (ties to even) to the f64 with words `lo`, `hi`.
        source: "fn kiln_f64_to_f32(lo: u32, hi: u32) -> f32 {
    let s = hi & 0x80000000u;
    let e = i32((hi >> 20u) & 0x7ffu);
    let m_hi = hi & 0xfffffu;
    if (e == 0x7ff) {
        if ((m_hi | lo) != 0u) { return bitcast<f32>(s | 0x7fc00000u); }
        return bitcast<f32>(s | 0x7f800000u);
    }
    // 53-bit significand as (hi 21 bits, lo 32 bits) -> top 24 bits plus round/sticky.
    let ef = e - 1023 + 127;
    if (ef >= 255) { return bitcast<f32>(s | 0x7f800000u); }
    if (e == 0 || ef < -24) { return bitcast<f32>(s); }
    var mant = (m_hi << 3u) | (lo >> 29u);
    let rest = lo & 0x1fffffffu;
    let half = 0x10000000u;
    if (ef <= 0) {
        // Subnormal f32: shift the significand (with its implicit bit) right.
        let full = mant | 0x800000u;
        let sh = u32(1 - ef);
        let lost = full & ((1u << sh) - 1u);
        mant = full >> sh;
        let sticky = select(0u, 1u, rest != 0u);
        let halfway = 1u << (sh - 1u);
        var r = mant;
        if (lost > halfway || (lost == halfway && (sticky == 1u || (mant & 1u) == 1u))) { r = r + 1u; }
        return bitcast<f32>(s | r);
    }
    var bits = (u32(ef) << 23u) | mant;
    if (rest > half || (rest == half && (mant & 1u) == 1u)) { bits = bits + 1u; }
    return bitcast<f32>(s | bits);
}",
    },
    Helper {
        name: "kiln_f32_to_f64",
        // The words (lo, hi) of the f64 equal to `x` (exact).
        source: "fn kiln_f32_to_f64(x: f32) -> vec2<u32> {
    let b = bitcast<u32>(x);
    let s = b & 0x80000000u;
    let e = (b >> 23u) & 0xffu;
    var m = b & 0x7fffffu;
    if (e == 0xffu) {
        return vec2<u32>(m << 29u, s | 0x7ff00000u | (m >> 3u));
    }
    if (e == 0u) {
        if (m == 0u) { return vec2<u32>(0u, s); }
        // Normalize a subnormal f32.
        var ee = 1i;
        while ((m & 0x800000u) == 0u) { m = m << 1u; ee = ee - 1i; }
        m = m & 0x7fffffu;
        let e64 = u32(ee - 127i + 1023i);
        return vec2<u32>(m << 29u, s | (e64 << 20u) | (m >> 3u));
    }
    let e64 = e - 127u + 1023u;
    return vec2<u32>(m << 29u, s | (e64 << 20u) | (m >> 3u));
}",
    },
];

/// The helpers in `used` and everything they call, as WGSL source in a fixed order.
pub fn helpers_source(used: &BTreeSet<&'static str>) -> String {
    let mut all: BTreeSet<&'static str> = BTreeSet::new();
    let mut stack: Vec<&'static str> = used.iter().copied().collect();
    while let Some(n) = stack.pop() {
        if all.insert(n) {
            if let Some(h) = HELPERS.iter().find(|h| h.name == n) {
                let calls = HELPERS
                    .iter()
                    .filter(|o| o.name != n && h.source.contains(&format!("{}(", o.name)));
                stack.extend(calls.map(|o| o.name));
            }
        }
    }
    let mut out = String::new();
    for h in HELPERS {
        if all.contains(h.name) {
            out.push_str(h.source);
            out.push_str("\n\n");
        }
    }
    out
}

/// Whether `name` is a helper of this module.
pub fn is_helper(name: &str) -> bool {
    HELPERS.iter().any(|h| h.name == name)
}
