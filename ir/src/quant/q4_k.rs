//! `Q4_K`: 256 elements in 144 bytes, as 8 sub-blocks of 32 elements.
//!
//! | bytes     | field    | contents                                                     |
//! |-----------|----------|--------------------------------------------------------------|
//! | `0..2`    | `d`      | f16 super-block scale for the scales                         |
//! | `2..4`    | `dmin`   | f16 super-block scale for the minimums                       |
//! | `4..16`   | `scales` | eight 6-bit scales `sc` and minimums `mn` (see [`super::scales`]) |
//! | `16..144` | `qs`     | 4-bit quants, see below                                      |
//!
//! Element `e` (`c = e / 64`, `r = e % 64`) has quant `q = (qs[32 c + r % 32] >> (4 (r / 32))) & 15`:
//! each 64-element chunk takes the low nibbles of its 32 bytes, then the high nibbles. It
//! belongs to sub-block `s = e / 32`.
//!
//! Element value: `(d * sc) * q - (dmin * mn)`, each product rounded to f32.

use super::scales::unpack_k4;
use super::{read_f16, QuantType};

pub(super) const BLOCK_SIZE: usize = 256;
pub(super) const BLOCK_BYTES: usize = 144;
const _: () = assert!(
    BLOCK_SIZE == QuantType::Q4_K.block_size() && BLOCK_BYTES == QuantType::Q4_K.block_bytes()
);

const D: usize = 0;
const DMIN: usize = 2;
const SCALES: usize = 4;
const QS: usize = 16;

pub(super) fn dequantize_block(block: &[u8; BLOCK_BYTES], out: &mut [f32; BLOCK_SIZE]) {
    let d = read_f16([block[D], block[D + 1]]);
    let dmin = read_f16([block[DMIN], block[DMIN + 1]]);
    let mut packed = [0u8; 12];
    packed.copy_from_slice(&block[SCALES..SCALES + 12]);
    let (sc, mn) = unpack_k4(&packed);
    for (e, y) in out.iter_mut().enumerate() {
        let (c, r) = (e / 64, e % 64);
        let q = (block[QS + 32 * c + r % 32] >> (4 * (r / 32))) & 0x0F;
        let s = e / 32;
        let dl = d * f32::from(sc[s]);
        let ml = dmin * f32::from(mn[s]);
        *y = dl * f32::from(q) - ml;
    }
}
