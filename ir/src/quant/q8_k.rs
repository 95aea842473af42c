//! `Q8_K`: 256 elements in 292 bytes. ggml uses it for activations, not stored weights.
//!
//! | bytes      | field   | contents                                                     |
//! |------------|---------|--------------------------------------------------------------|
//! | `0..4`     | `d`     | **f32** scale (the only block type here with an f32 scale)   |
//! | `4..260`   | `qs`    | one signed byte (`i8`) per element                           |
//! | `260..292` | `bsums` | sixteen little-endian `i16` sums of 16 quants each, for dot products; not read by dequantization |
//!
//! Element value: `d * q`, `q` in `-128..128`.

use super::QuantType;

pub(super) const BLOCK_SIZE: usize = 256;
pub(super) const BLOCK_BYTES: usize = 292;
const _: () = assert!(
    BLOCK_SIZE == QuantType::Q8_K.block_size() && BLOCK_BYTES == QuantType::Q8_K.block_bytes()
);

const D: usize = 0;
const QS: usize = 4;

pub(super) fn dequantize_block(block: &[u8; BLOCK_BYTES], out: &mut [f32; BLOCK_SIZE]) {
    let d = f32::from_le_bytes([block[D], block[D + 1], block[D + 2], block[D + 3]]);
    for (e, y) in out.iter_mut().enumerate() {
        let q = block[QS + e] as i8;
        *y = d * f32::from(q);
    }
}
