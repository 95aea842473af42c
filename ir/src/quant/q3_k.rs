//! `Q3_K`: 256 elements in 110 bytes, as 16 sub-blocks of 16 elements.
//!
//! | bytes      | field    | contents                                                    |
//! |------------|----------|-------------------------------------------------------------|
//! | `0..32`    | `hmask`  | high bits: element `e`'s is bit `e / 32` of `hmask[e % 32]` |
//! | `32..96`   | `qs`     | low 2 bits: element `e` (`h = e / 128`, `r = e % 128`) has `(qs[32 h + r % 32] >> (2 (r / 32))) & 3` |
//! | `96..108`  | `scales` | sixteen 6-bit scales, see below                             |
//! | `108..110` | `d`      | f16 super-block scale                                       |
//!
//! The quant is `q = low - 4` when the high bit is **clear** and `q = low` when it is set, so
//! `q` is in `-4..4`.
//!
//! Scale `j` (of sub-block `j = e / 16`) is 6 bits: its low 4 bits are the low nibble of
//! `scales[j]` for `j < 8` and the high nibble of `scales[j - 8]` for `j >= 8`; its high 2
//! bits are bits `2 (j / 4)` and up of `scales[8 + j % 4]`. The signed scale is that value
//! minus 32.
//!
//! Element value: `(d * (scale - 32)) * q`, each product rounded to f32.

use super::{read_f16, QuantType};

pub(super) const BLOCK_SIZE: usize = 256;
pub(super) const BLOCK_BYTES: usize = 110;
const _: () = assert!(
    BLOCK_SIZE == QuantType::Q3_K.block_size() && BLOCK_BYTES == QuantType::Q3_K.block_bytes()
);

const HMASK: usize = 0;
const QS: usize = 32;
const SCALES: usize = 96;
const D: usize = 108;

/// The sixteen signed scales, each in `-32..32`.
fn unpack_scales(block: &[u8; BLOCK_BYTES]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (j, s) in out.iter_mut().enumerate() {
        let low = (block[SCALES + j % 8] >> (4 * (j / 8))) & 0x0F;
        let high = (block[SCALES + 8 + j % 4] >> (2 * (j / 4))) & 0x03;
        *s = (low | (high << 4)) as i8 - 32;
    }
    out
}

pub(super) fn dequantize_block(block: &[u8; BLOCK_BYTES], out: &mut [f32; BLOCK_SIZE]) {
    let d = read_f16([block[D], block[D + 1]]);
    let scales = unpack_scales(block);
    for (e, y) in out.iter_mut().enumerate() {
        let (h, r) = (e / 128, e % 128);
        let low = ((block[QS + 32 * h + r % 32] >> (2 * (r / 32))) & 3) as i8;
        let high_set = (block[HMASK + e % 32] >> (e / 32)) & 1 == 1;
        let q = if high_set { low } else { low - 4 };
        let dl = d * f32::from(scales[e / 16]);
        *y = dl * f32::from(q);
    }
}
