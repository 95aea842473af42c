//! Scalar helper functions that generated CPU code calls for what Cranelift has no instruction
//! for: transcendental functions, rounding to f16/bf16, float `pow`/`mod`, integer floor
//! division, f16 conversions and element loads from block-quantized buffers.
//!
//! Every helper computes exactly what [`kiln_ir::numerics`] computes (so results agree with the
//! reference interpreter bit for bit), never panics, and is exported under a C name so a JIT
//! module registers its address and an ahead-of-time object links against it. Ops and dtypes
//! cross the C boundary as small codes ([`unary_code`], [`dtype_code`], ...).

use kiln_ir::numerics::{binary_float, binary_int, round_float, unary_rounded, wrap_int};
use kiln_ir::quant::{dequantize_block, QuantType};
use kiln_ir::{BinaryOp, DType, UnaryOp};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

/// The unary ops, indexed by their code.
const UNARY: [UnaryOp; 16] = UnaryOp::ALL;

/// The binary ops, indexed by their code.
const BINARY: [BinaryOp; 17] = BinaryOp::ALL;

/// The non-quantized dtypes, indexed by their code.
const DTYPES: [DType; 11] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::F64,
    DType::I8,
    DType::I16,
    DType::I32,
    DType::I64,
    DType::U8,
    DType::U32,
    DType::Bool,
];

/// The code of a unary op.
pub fn unary_code(op: UnaryOp) -> u32 {
    UNARY.iter().position(|&u| u == op).unwrap_or(0) as u32
}

/// The code of a binary op.
pub fn binary_code(op: BinaryOp) -> u32 {
    BINARY.iter().position(|&b| b == op).unwrap_or(0) as u32
}

/// The code of a plain dtype.
pub fn dtype_code(d: DType) -> u32 {
    DTYPES.iter().position(|&x| x == d).unwrap_or(0) as u32
}

fn dtype(code: u32) -> DType {
    DTYPES.get(code as usize).copied().unwrap_or(DType::F64)
}

/// `op(x)` rounded to the float dtype `dtype`, as the interpreter computes it
/// ([`unary_rounded`]).
#[no_mangle]
pub extern "C" fn kiln_unary_f64(op: u32, dtype_code: u32, x: f64) -> f64 {
    let op = UNARY.get(op as usize).copied().unwrap_or(UnaryOp::Neg);
    unary_rounded(op, dtype(dtype_code), x)
}

/// `round(op(a, b))` to the float dtype `dtype` (used for `pow` and `mod`).
#[no_mangle]
pub extern "C" fn kiln_binary_f64(op: u32, dtype_code: u32, a: f64, b: f64) -> f64 {
    let op = BINARY.get(op as usize).copied().unwrap_or(BinaryOp::Add);
    round_float(dtype(dtype_code), binary_float(op, a, b))
}

/// Rounds `x` to the float dtype `dtype` (one rounding, ties to even).
#[no_mangle]
pub extern "C" fn kiln_round_f64(dtype_code: u32, x: f64) -> f64 {
    round_float(dtype(dtype_code), x)
}

/// An integer op wrapped to `dtype` (used for floor division and modulo; `x / 0 == 0`).
#[no_mangle]
pub extern "C" fn kiln_binary_i64(op: u32, dtype_code: u32, a: i64, b: i64) -> i64 {
    let op = BINARY.get(op as usize).copied().unwrap_or(BinaryOp::Add);
    wrap_int(dtype(dtype_code), binary_int(op, a, b))
}

/// The f32 value of IEEE binary16 bits.
#[no_mangle]
pub extern "C" fn kiln_f16_to_f32(bits: u32) -> f32 {
    half::f16::from_bits(bits as u16).to_f32()
}

/// The binary16 bits of `x` (exact when `x` is an f16 value, as stored values are).
#[no_mangle]
pub extern "C" fn kiln_f32_to_f16(x: f32) -> u32 {
    u32::from(half::f16::from_f32(x).to_bits())
}

thread_local! {
    /// The last dequantized block per thread: (block address, quant code, epoch, values).
    static BLOCK: RefCell<(usize, u32, u64, Vec<f32>)> =
        const { RefCell::new((0, u32::MAX, 0, Vec::new())) };
}

/// Bumped by [`clear_dequant_cache`]; a cached block of an older epoch is stale.
static EPOCH: AtomicU64 = AtomicU64::new(1);

/// Element `index` of a block-quantized buffer at `base`, dequantized. `qtype` is the GGUF
/// type id. The caller guarantees the block lies in the buffer; an unknown type gives NaN.
///
/// # Safety
/// `base` must point to a buffer holding the whole block of element `index`.
#[no_mangle]
pub unsafe extern "C" fn kiln_load_dequant(base: *const u8, qtype: u32, index: i64) -> f32 {
    let Some(q) = QuantType::from_gguf_type_id(qtype) else {
        return f32::NAN;
    };
    let (bs, bb) = (q.block_size() as i64, q.block_bytes());
    let (block, slot) = (index.div_euclid(bs), index.rem_euclid(bs) as usize);
    let at = base.wrapping_add(block as usize * bb);
    let epoch = EPOCH.load(Ordering::Relaxed);
    BLOCK.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != at as usize || c.1 != qtype || c.2 != epoch {
            c.3.resize(q.block_size(), 0.0);
            // SAFETY: the caller guarantees the block's bytes are readable.
            let bytes = unsafe { std::slice::from_raw_parts(at, bb) };
            if dequantize_block(q, bytes, &mut c.3).is_err() {
                c.1 = u32::MAX;
                return f32::NAN;
            }
            (c.0, c.1, c.2) = (at as usize, qtype, epoch);
        }
        c.3[slot]
    })
}

/// Makes every thread forget its cached block (call when quantized buffer contents change
/// in place, e.g. weights reloaded at the same address).
pub fn clear_dequant_cache() {
    EPOCH.fetch_add(1, Ordering::Relaxed);
}

/// The helpers' C names and addresses, for registering with a JIT module.
pub fn symbols() -> Vec<(&'static str, *const u8)> {
    vec![
        ("kiln_unary_f64", kiln_unary_f64 as *const u8),
        ("kiln_binary_f64", kiln_binary_f64 as *const u8),
        ("kiln_round_f64", kiln_round_f64 as *const u8),
        ("kiln_binary_i64", kiln_binary_i64 as *const u8),
        ("kiln_f16_to_f32", kiln_f16_to_f32 as *const u8),
        ("kiln_f32_to_f16", kiln_f32_to_f16 as *const u8),
        ("kiln_load_dequant", kiln_load_dequant as *const u8),
    ]
}
