//! WGSL dequantization of the GGUF block-quantized types ([`QuantType`]).
//!
//! [`dequant_function`] emits, for one type, a WGSL function `fn NAME(i: i32) -> f32` that
//! returns element `i` of a buffer of blocks, counted from the buffer's first block, exactly as
//! [`kiln_ir::quant::dequantize`] computes it. Each function is a direct transcription of the
//! byte layout documented in `ir/src/quant`: it splits `i` into a block and an element within
//! the block, reads the few bytes that element needs, and applies the same formula in the same
//! order.
//!
//! # The byte reader
//!
//! The emitted code never touches a buffer itself: it reads bytes only through a function
//! `fn BYTE(b: i32) -> u32` that the caller defines and names, returning byte `b` of the
//! quantized data (`0..=255`). WGSL has no byte-addressed storage, so the caller typically binds
//! the buffer as `array<u32>` and defines
//!
//! ```wgsl
//! fn w_byte(b: i32) -> u32 {
//!     let p = b + 12i; // the blocks start 12 bytes into the binding
//!     return (w[p >> 2u] >> (8u * u32(p & 3i))) & 0xffu;
//! }
//! ```
//!
//! which keeps the layouts byte for byte as in a GGUF file (blocks of 18, 22 or 110 bytes are
//! not word-aligned) and lets the data start at any byte offset of the binding. Byte indices are
//! `i32`, so one function addresses at most 2 GiB of blocks.
//!
//! # Helpers and naming
//!
//! Small helpers (a little-endian `u16`/`u32` read, a sign-extended byte, an f16 scale, the
//! 6-bit scale/minimum unpacking of `Q4_K`/`Q5_K`) are emitted together with each function and
//! named with its name as prefix (`NAME_u16`, `NAME_f16`, ...), so any number of dequantization
//! functions, of the same type or not, can share a module as long as their names differ (and no
//! name is a prefix-plus-suffix of another, e.g. avoid `w` next to `w_f16`). The one shared
//! helper, `kiln_f16_to_f32` ([`f16_helper`]), is emitted once per module by the caller.
//!
//! # Exactness
//!
//! As the `kiln_ir::quant` documentation explains, every product in these formulas is exact in
//! f32 (f16 scales have 11 significant bits and the integer factors at most 7 + 5 more), so the
//! only rounding is the final `+ m` / `- ml` (or `Q8_K`'s single multiply). WGSL requires f32
//! `+`, `-` and `*` to be correctly rounded, so each result is bit-exact with the reference.
//! This also holds under fused multiply-add contraction, which WGSL and SPIR-V drivers may apply
//! to `a * b + c`: fusing only skips the rounding of a product that is exact anyway. The
//! emitted code keeps the reference's operation order regardless (`d * q + m`,
//! `(d * sc) * q - (dmin * mn)`).
//!
//! Caveats, all outside what finite GGUF weights produce:
//! - Results are normal f32 values or zero for every f16-scaled type (the smallest nonzero one
//!   is `2^-24`), so flushing of subnormals cannot change them; a `Q8_K` block whose f32 scale
//!   makes a product subnormal may be flushed to zero by the driver.
//! - WGSL lets implementations assume no infinities or NaN during shader execution, so an
//!   infinite or NaN f16 scale, or a `Q8_K` product that overflows, gives an unspecified
//!   result rather than the reference's infinity or NaN.
//! - Signed zeros (e.g. `d * 0` with a negative `d`) match only on drivers that preserve the
//!   sign of zero (Vulkan drivers in practice do, lavapipe included).

use kiln_ir::quant::QuantType;

/// WGSL source of `fn {name}(i: i32) -> f32`: element `i` (flat, counted from the buffer's first
/// block) of a buffer of `q` blocks, dequantized exactly as `kiln_ir::quant::dequantize` does.
/// It reads the buffer only through `fn {byte}(b: i32) -> u32`, which the caller defines and which
/// returns byte `b` of the buffer (0..=255). It may call `fn kiln_f16_to_f32(bits: u32) -> f32`
/// (see `f16_helper`).
///
/// Helpers the function needs are emitted before it, each named `{name}_...` (see the module
/// documentation). `i` must be non-negative and within the buffer: nothing is bounds-checked
/// here beyond what `byte` does.
///
/// # Panics
///
/// If `name` or `byte` is not a WGSL identifier of ASCII letters, digits and underscores that
/// starts with a letter or a single underscore.
pub fn dequant_function(q: QuantType, name: &str, byte: &str) -> String {
    assert_identifier(name);
    assert_identifier(byte);
    let (helpers, body): (&[&str], &str) = match q {
        QuantType::Q4_0 => (&[U16, F16], Q4_0),
        QuantType::Q4_1 => (&[U16, F16], Q4_1),
        QuantType::Q5_0 => (&[U16, F16], Q5_0),
        QuantType::Q5_1 => (&[U16, F16], Q5_1),
        QuantType::Q8_0 => (&[U16, F16, I8], Q8_0),
        QuantType::Q2_K => (&[U16, F16], Q2_K),
        QuantType::Q3_K => (&[U16, F16, Q3_K_SCALE], Q3_K),
        QuantType::Q4_K => (&[U16, F16, K4_SCALE_MIN], Q4_K),
        QuantType::Q5_K => (&[U16, F16, K4_SCALE_MIN], Q5_K),
        QuantType::Q6_K => (&[U16, F16, I8], Q6_K),
        QuantType::Q8_K => (&[U16, U32, I8], Q8_K),
    };
    let mut src = format!(
        "// {{N}}: {} dequantization ({} elements in {}-byte blocks), reading bytes via {{B}}.\n",
        q.name(),
        q.block_size(),
        q.block_bytes()
    );
    for helper in helpers {
        src.push_str(helper);
        src.push('\n');
    }
    src.push_str(body);
    src.replace("{N}", name).replace("{B}", byte)
}

/// WGSL source of `fn kiln_f16_to_f32(bits: u32) -> f32`: the exact f32 value of the f16 whose
/// bits are the low 16 bits of `bits` (subnormals, infinities and NaN included), by bit
/// manipulation (not `unpack2x16float`, whose subnormal handling varies between drivers).
/// Emitted once per module by the caller when any dequant function is used.
///
/// Every f16 value, subnormals included, is a normal f32 (or zero), so the result survives
/// drivers that flush f32 subnormals. Infinities and NaN are built bit for bit (a NaN keeps its
/// payload, shifted as a widening conversion does), but arithmetic on them afterwards is not
/// specified by WGSL.
pub fn f16_helper() -> String {
    F16_TO_F32.to_string()
}

/// Panics unless `s` is a plain WGSL identifier not starting with `__` (reserved) or a digit.
fn assert_identifier(s: &str) {
    let ok = !s.is_empty()
        && !s.starts_with("__")
        && s != "_"
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    assert!(ok, "not a WGSL identifier usable for dequantization: {s:?}");
}

const F16_TO_F32: &str = "\
// The f16 whose bits are the low 16 bits of `bits`, widened exactly to f32 by bit manipulation.
fn kiln_f16_to_f32(bits: u32) -> f32 {
    let sign = (bits & 0x8000u) << 16u;
    let exponent = (bits >> 10u) & 0x1fu;
    let mantissa = bits & 0x3ffu;
    if (exponent == 0x1fu) {
        // Infinity (mantissa 0) or NaN: all-ones f32 exponent, the mantissa kept.
        return bitcast<f32>(sign | 0x7f800000u | (mantissa << 13u));
    }
    if (exponent != 0u) {
        // Normal: rebias the exponent from 15 to 127.
        return bitcast<f32>(sign | ((exponent + 112u) << 23u) | (mantissa << 13u));
    }
    if (mantissa == 0u) {
        return bitcast<f32>(sign);
    }
    // Subnormal: mantissa * 2^-24 with the mantissa's leading one at bit p (0..=9), which is the
    // normal f32 2^(p - 24) * 1.fraction: biased exponent p - 24 + 127, the bits below the
    // leading one moved up to the top of the 23-bit fraction.
    let p = firstLeadingBit(mantissa);
    let fraction = (mantissa << (23u - p)) & 0x7fffffu;
    return bitcast<f32>(sign | ((p + 103u) << 23u) | fraction);
}
";

/// Little-endian u16 at byte `b`.
const U16: &str = "\
fn {N}_u16(b: i32) -> u32 {
    return {B}(b) | ({B}(b + 1i) << 8u);
}
";

/// Little-endian f16 at byte `b`, widened to f32.
const F16: &str = "\
fn {N}_f16(b: i32) -> f32 {
    return kiln_f16_to_f32({N}_u16(b));
}
";

/// Little-endian u32 at byte `b` (needs `U16`).
const U32: &str = "\
fn {N}_u32(b: i32) -> u32 {
    return {N}_u16(b) | ({N}_u16(b + 2i) << 16u);
}
";

/// Byte `b` as a signed byte (`i8`), sign-extended.
const I8: &str = "\
fn {N}_i8(b: i32) -> i32 {
    return bitcast<i32>({B}(b) << 24u) >> 24u;
}
";

/// `Q4_K`/`Q5_K`: the 6-bit scale (`.x`) and minimum (`.y`) of sub-block `s` (0..8) from the
/// 12 packed bytes at `p` (the layout of `ir/src/quant/scales.rs`).
const K4_SCALE_MIN: &str = "\
// Scale (x) and minimum (y), 6 bits each, of sub-block s of the 12 packed bytes at p.
fn {N}_scale_min(p: i32, s: i32) -> vec2<u32> {
    if (s < 4i) {
        return vec2<u32>({B}(p + s) & 63u, {B}(p + 4i + s) & 63u);
    }
    let j = s - 4i;
    let low = {B}(p + 8i + j);
    let sc = (low & 15u) | (({B}(p + j) >> 6u) << 4u);
    let mn = (low >> 4u) | (({B}(p + 4i + j) >> 6u) << 4u);
    return vec2<u32>(sc, mn);
}
";

/// `Q3_K`: the signed 6-bit scale (`-32..32`) of sub-block `j` (0..16) from the 12 packed bytes
/// at `p`.
const Q3_K_SCALE: &str = "\
// Signed scale (-32..32) of sub-block j of the 12 packed bytes at p.
fn {N}_scale(p: i32, j: i32) -> i32 {
    let low = ({B}(p + j % 8i) >> (4u * u32(j / 8i))) & 15u;
    let high = ({B}(p + 8i + j % 4i) >> (2u * u32(j / 4i))) & 3u;
    return i32(low | (high << 4u)) - 32i;
}
";

const Q4_0: &str = "\
fn {N}(i: i32) -> f32 {
    let base = (i / 32i) * 18i;
    let e = i % 32i;
    let d = {N}_f16(base);
    let q = ({B}(base + 2i + e % 16i) >> (4u * u32(e / 16i))) & 15u;
    return d * f32(i32(q) - 8i);
}
";

const Q4_1: &str = "\
fn {N}(i: i32) -> f32 {
    let base = (i / 32i) * 20i;
    let e = i % 32i;
    let d = {N}_f16(base);
    let m = {N}_f16(base + 2i);
    let q = ({B}(base + 4i + e % 16i) >> (4u * u32(e / 16i))) & 15u;
    // d * q is exact: one rounding, at the add, fused or not.
    return d * f32(q) + m;
}
";

const Q5_0: &str = "\
fn {N}(i: i32) -> f32 {
    let base = (i / 32i) * 22i;
    let e = i % 32i;
    let d = {N}_f16(base);
    // Bit e of the little-endian u32 qh at byte 2 is bit e % 8 of its byte e / 8.
    let high = ({B}(base + 2i + e / 8i) >> u32(e % 8i)) & 1u;
    let low = ({B}(base + 6i + e % 16i) >> (4u * u32(e / 16i))) & 15u;
    return d * f32(i32(low | (high << 4u)) - 16i);
}
";

const Q5_1: &str = "\
fn {N}(i: i32) -> f32 {
    let base = (i / 32i) * 24i;
    let e = i % 32i;
    let d = {N}_f16(base);
    let m = {N}_f16(base + 2i);
    // Bit e of the little-endian u32 qh at byte 4 is bit e % 8 of its byte e / 8.
    let high = ({B}(base + 4i + e / 8i) >> u32(e % 8i)) & 1u;
    let low = ({B}(base + 8i + e % 16i) >> (4u * u32(e / 16i))) & 15u;
    // d * q is exact: one rounding, at the add, fused or not.
    return d * f32(low | (high << 4u)) + m;
}
";

const Q8_0: &str = "\
fn {N}(i: i32) -> f32 {
    let base = (i / 32i) * 34i;
    let e = i % 32i;
    let d = {N}_f16(base);
    return d * f32({N}_i8(base + 2i + e));
}
";

const Q2_K: &str = "\
fn {N}(i: i32) -> f32 {
    let base = (i / 256i) * 84i;
    let e = i % 256i;
    let r = e % 128i;
    let q = ({B}(base + 16i + 32i * (e / 128i) + r % 32i) >> (2u * u32(r / 32i))) & 3u;
    let packed = {B}(base + e / 16i);
    let d = {N}_f16(base + 80i);
    let dmin = {N}_f16(base + 82i);
    let dl = d * f32(packed & 15u);
    let ml = dmin * f32(packed >> 4u);
    // Both products are exact: one rounding, at the subtraction, fused or not.
    return dl * f32(q) - ml;
}
";

const Q3_K: &str = "\
fn {N}(i: i32) -> f32 {
    let base = (i / 256i) * 110i;
    let e = i % 256i;
    let r = e % 128i;
    let low = ({B}(base + 32i + 32i * (e / 128i) + r % 32i) >> (2u * u32(r / 32i))) & 3u;
    let high = ({B}(base + e % 32i) >> u32(e / 32i)) & 1u;
    // A clear high bit subtracts 4: q in -4..4.
    let q = i32(low) - 4i * i32(1u - high);
    let d = {N}_f16(base + 108i);
    let dl = d * f32({N}_scale(base + 96i, e / 16i));
    return dl * f32(q);
}
";

const Q4_K: &str = "\
fn {N}(i: i32) -> f32 {
    let base = (i / 256i) * 144i;
    let e = i % 256i;
    let r = e % 64i;
    let q = ({B}(base + 16i + 32i * (e / 64i) + r % 32i) >> (4u * u32(r / 32i))) & 15u;
    let sm = {N}_scale_min(base + 4i, e / 32i);
    let d = {N}_f16(base);
    let dmin = {N}_f16(base + 2i);
    let dl = d * f32(sm.x);
    let ml = dmin * f32(sm.y);
    // Both products are exact: one rounding, at the subtraction, fused or not.
    return dl * f32(q) - ml;
}
";

const Q5_K: &str = "\
fn {N}(i: i32) -> f32 {
    let base = (i / 256i) * 176i;
    let e = i % 256i;
    let r = e % 64i;
    let low = ({B}(base + 48i + 32i * (e / 64i) + r % 32i) >> (4u * u32(r / 32i))) & 15u;
    let high = ({B}(base + 16i + e % 32i) >> u32(e / 32i)) & 1u;
    let sm = {N}_scale_min(base + 4i, e / 32i);
    let d = {N}_f16(base);
    let dmin = {N}_f16(base + 2i);
    let dl = d * f32(sm.x);
    let ml = dmin * f32(sm.y);
    // Both products are exact: one rounding, at the subtraction, fused or not.
    return dl * f32(low | (high << 4u)) - ml;
}
";

const Q6_K: &str = "\
fn {N}(i: i32) -> f32 {
    let base = (i / 256i) * 210i;
    let e = i % 256i;
    let h = e / 128i;
    let g = (e % 128i) / 32i;
    let l = e % 32i;
    let low = ({B}(base + 64i * h + 32i * (g % 2i) + l) >> (4u * u32(g / 2i))) & 15u;
    let high = ({B}(base + 128i + 32i * h + l) >> (2u * u32(g))) & 3u;
    let q = i32(low | (high << 4u)) - 32i;
    let d = {N}_f16(base + 208i);
    let dl = d * f32({N}_i8(base + 192i + e / 16i));
    return dl * f32(q);
}
";

const Q8_K: &str = "\
fn {N}(i: i32) -> f32 {
    let base = (i / 256i) * 292i;
    let e = i % 256i;
    let d = bitcast<f32>({N}_u32(base));
    return d * f32({N}_i8(base + 4i + e));
}
";

#[cfg(test)]
mod tests {
    use super::*;
    use naga::valid::{Capabilities, ValidationFlags, Validator};

    /// A module around `functions`: a storage buffer of words, the byte reader over it, the f16
    /// helper, and an entry point calling each named function.
    fn module(functions: &[(QuantType, &str)]) -> String {
        let mut src = String::from(
            "@group(0) @binding(0) var<storage, read> data: array<u32>;\n\
             @group(0) @binding(1) var<storage, read_write> out: array<f32>;\n\
             fn byte(b: i32) -> u32 {\n    \
                 return (data[b >> 2u] >> (8u * u32(b & 3i))) & 0xffu;\n\
             }\n",
        );
        src.push_str(&f16_helper());
        let mut calls = String::new();
        for (k, (q, name)) in functions.iter().enumerate() {
            src.push_str(&dequant_function(*q, name, "byte"));
            calls.push_str(&format!(
                "    out[id.x * {}u + {k}u] = {name}(i32(id.x));\n",
                functions.len()
            ));
        }
        src.push_str(&format!(
            "@compute @workgroup_size(64)\n\
             fn main(@builtin(global_invocation_id) id: vec3<u32>) {{\n{calls}}}\n"
        ));
        src
    }

    fn validate(src: &str) {
        let module = naga::front::wgsl::parse_str(src)
            .unwrap_or_else(|e| panic!("{}\n{src}", e.emit_to_string(src)));
        Validator::new(ValidationFlags::all(), Capabilities::empty())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}\n{src}", e.emit_to_string(src)));
    }

    #[test]
    fn dequant_each_type_validates() {
        for q in QuantType::ALL {
            validate(&module(&[(q, &format!("dequant_{}", q.name()))]));
        }
    }

    #[test]
    fn dequant_all_types_share_one_module() {
        // Every type twice under different names: no helper may be defined twice.
        let names: Vec<(QuantType, String)> = QuantType::ALL
            .into_iter()
            .flat_map(|q| {
                [
                    (q, format!("w_{}", q.name())),
                    (q, format!("x_{}", q.name())),
                ]
            })
            .collect();
        let functions: Vec<(QuantType, &str)> =
            names.iter().map(|(q, n)| (*q, n.as_str())).collect();
        validate(&module(&functions));
    }

    #[test]
    fn dequant_emits_no_reserved_or_untyped_names() {
        for q in QuantType::ALL {
            let src = dequant_function(q, "w", "rd");
            assert!(!src.contains("__"), "{src}");
            assert!(!src.contains("{N}") && !src.contains("{B}"), "{src}");
            // Every function defined is the requested one or prefixed with it.
            for line in src.lines().filter(|l| l.starts_with("fn ")) {
                assert!(
                    line.starts_with("fn w(") || line.starts_with("fn w_"),
                    "{line}"
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "not a WGSL identifier")]
    fn dequant_rejects_reserved_name() {
        dequant_function(QuantType::Q4_0, "__w", "byte");
    }

    #[test]
    fn dequant_q4_1_snapshot() {
        insta::assert_snapshot!(dequant_function(QuantType::Q4_1, "w_q4_1", "w_byte"));
    }

    #[test]
    fn dequant_f16_helper_snapshot() {
        insta::assert_snapshot!(f16_helper());
    }
}
