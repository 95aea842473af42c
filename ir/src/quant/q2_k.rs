//! `Q2_K`: 256 elements in 84 bytes, as 16 sub-blocks of 16 elements.
//!
//! | bytes     | field    | contents                                                     |
//! |-----------|----------|--------------------------------------------------------------|
//! | `0..16`   | `scales` | byte `s`: low nibble is sub-block `s`'s scale `sc`, high nibble its minimum `mn` |
//! | `16..80`  | `qs`     | 2-bit quants, see below                                      |
//! | `80..82`  | `d`      | f16 super-block scale for the scales                         |
//! | `82..84`  | `dmin`   | f16 super-block scale for the minimums                       |
//!
//! Element `e` (`h = e / 128`, `r = e % 128`) has quant `q = (qs[32 h + r % 32] >> (2 (r / 32))) & 3`
//! and belongs to sub-block `s = e / 16`.
//!
//! Element value: `(d * sc) * q - (dmin * mn)`, each product rounded to f32.

use super::{read_f16, QuantType};

pub(super) const BLOCK_SIZE: usize = 256;
pub(super) const BLOCK_BYTES: usize = 84;
const _: () = assert!(
    BLOCK_SIZE == QuantType::Q2_K.block_size() && BLOCK_BYTES == QuantType::Q2_K.block_bytes()
);

const SCALES: usize = 0;
const QS: usize = 16;
const D: usize = 80;
const DMIN: usize = 82;

pub(super) fn dequantize_block(block: &[u8; BLOCK_BYTES], out: &mut [f32; BLOCK_SIZE]) {
    let d = read_f16([block[D], block[D + 1]]);
    let dmin = read_f16([block[DMIN], block[DMIN + 1]]);
    for (e, y) in out.iter_mut().enumerate() {
        let (h, r) = (e / 128, e % 128);
        let q = (block[QS + 32 * h + r % 32] >> (2 * (r / 32))) & 3;
        let packed = block[SCALES + e / 16];
        let dl = d * f32::from(packed & 0x0F);
        let ml = dmin * f32::from(packed >> 4);
        *y = dl * f32::from(q) - ml;
    }
}
