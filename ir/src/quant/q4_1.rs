//! `Q4_1`: 32 elements in 20 bytes.
//!
//! | bytes    | field | contents                                                          |
//! |----------|-------|-------------------------------------------------------------------|
//! | `0..2`   | `d`   | f16 scale                                                         |
//! | `2..4`   | `m`   | f16 minimum                                                       |
//! | `4..20`  | `qs`  | 4-bit quants `q`: byte `i` holds element `i` in its low nibble and element `i + 16` in its high nibble |
//!
//! Element value: `d * q + m` (multiply, round to f32, add, round), `q` in `0..16`.

use super::{read_f16, QuantType};

pub(super) const BLOCK_SIZE: usize = 32;
pub(super) const BLOCK_BYTES: usize = 20;
const _: () = assert!(
    BLOCK_SIZE == QuantType::Q4_1.block_size() && BLOCK_BYTES == QuantType::Q4_1.block_bytes()
);

const QS: usize = 4;

pub(super) fn dequantize_block(block: &[u8; BLOCK_BYTES], out: &mut [f32; BLOCK_SIZE]) {
    let d = read_f16([block[0], block[1]]);
    let m = read_f16([block[2], block[3]]);
    // Low nibbles are elements 0..16, high nibbles 16..32 (two straight loops vectorize).
    let (lo, hi) = out.split_at_mut(16);
    for ((l, h), &byte) in lo.iter_mut().zip(hi.iter_mut()).zip(&block[QS..]) {
        *l = d * f32::from(byte & 0x0F) + m;
        *h = d * f32::from(byte >> 4) + m;
    }
}
