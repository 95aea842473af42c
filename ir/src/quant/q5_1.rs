//! `Q5_1`: 32 elements in 24 bytes.
//!
//! | bytes    | field | contents                                                          |
//! |----------|-------|-------------------------------------------------------------------|
//! | `0..2`   | `d`   | f16 scale                                                         |
//! | `2..4`   | `m`   | f16 minimum                                                       |
//! | `4..8`   | `qh`  | little-endian `u32`: bit `e` is bit 4 (the high bit) of element `e`'s quant |
//! | `8..24`  | `qs`  | low 4 bits of the quants: byte `i` holds element `i` in its low nibble and element `i + 16` in its high nibble |
//!
//! Element value: `d * q + m` (multiply, round to f32, add, round), `q` in `0..32`.

use super::{read_f16, QuantType};

pub(super) const BLOCK_SIZE: usize = 32;
pub(super) const BLOCK_BYTES: usize = 24;
const _: () = assert!(
    BLOCK_SIZE == QuantType::Q5_1.block_size() && BLOCK_BYTES == QuantType::Q5_1.block_bytes()
);

const QH: usize = 4;
const QS: usize = 8;

pub(super) fn dequantize_block(block: &[u8; BLOCK_BYTES], out: &mut [f32; BLOCK_SIZE]) {
    let d = read_f16([block[0], block[1]]);
    let m = read_f16([block[2], block[3]]);
    let qh = u32::from_le_bytes([block[QH], block[QH + 1], block[QH + 2], block[QH + 3]]);
    for (e, y) in out.iter_mut().enumerate() {
        let low = (block[QS + e % 16] >> (4 * (e / 16))) & 0x0F;
        let high = ((qh >> e) & 1) as u8;
        let q = low | (high << 4);
        *y = d * f32::from(q) + m;
    }
}
