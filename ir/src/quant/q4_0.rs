//! `Q4_0`: 32 elements in 18 bytes.
//!
//! | bytes    | field | contents                                                          |
//! |----------|-------|-------------------------------------------------------------------|
//! | `0..2`   | `d`   | f16 scale                                                         |
//! | `2..18`  | `qs`  | 4-bit quants `q`: byte `i` holds element `i` in its low nibble and element `i + 16` in its high nibble |
//!
//! Element value: `d * (q - 8)`, `q` in `0..16`.

use super::{read_f16, QuantType};

pub(super) const BLOCK_SIZE: usize = 32;
pub(super) const BLOCK_BYTES: usize = 18;
const _: () = assert!(
    BLOCK_SIZE == QuantType::Q4_0.block_size() && BLOCK_BYTES == QuantType::Q4_0.block_bytes()
);

const QS: usize = 2;

pub(super) fn dequantize_block(block: &[u8; BLOCK_BYTES], out: &mut [f32; BLOCK_SIZE]) {
    let d = read_f16([block[0], block[1]]);
    // Low nibbles are elements 0..16, high nibbles 16..32 (two straight loops vectorize).
    let (lo, hi) = out.split_at_mut(16);
    for ((l, h), &byte) in lo.iter_mut().zip(hi.iter_mut()).zip(&block[QS..]) {
        *l = d * f32::from((byte & 0x0F) as i8 - 8);
        *h = d * f32::from((byte >> 4) as i8 - 8);
    }
}
