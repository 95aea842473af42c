//! `Q5_K`: 256 elements in 176 bytes, as 8 sub-blocks of 32 elements.
//!
//! | bytes     | field    | contents                                                     |
//! |-----------|----------|--------------------------------------------------------------|
//! | `0..2`    | `d`      | f16 super-block scale for the scales                         |
//! | `2..4`    | `dmin`   | f16 super-block scale for the minimums                       |
//! | `4..16`   | `scales` | eight 6-bit scales `sc` and minimums `mn` (see [`super::scales`]) |
//! | `16..48`  | `qh`     | high bits: element `e`'s is bit `e / 32` of `qh[e % 32]`     |
//! | `48..176` | `qs`     | low 4 bits, laid out as `Q4_K`'s quants                      |
//!
//! Element `e` (`c = e / 64`, `r = e % 64`) has low bits `(qs[32 c + r % 32] >> (4 (r / 32))) & 15`,
//! high bit as above, so `q` is in `0..32`. It belongs to sub-block `s = e / 32`.
//!
//! Element value: `(d * sc) * q - (dmin * mn)`, each product rounded to f32.

use super::scales::unpack_k4;
use super::{read_f16, QuantType};

pub(super) const BLOCK_SIZE: usize = 256;
pub(super) const BLOCK_BYTES: usize = 176;
const _: () = assert!(
    BLOCK_SIZE == QuantType::Q5_K.block_size() && BLOCK_BYTES == QuantType::Q5_K.block_bytes()
);

const D: usize = 0;
const DMIN: usize = 2;
const SCALES: usize = 4;
const QH: usize = 16;
const QS: usize = 48;

pub(super) fn dequantize_block(block: &[u8; BLOCK_BYTES], out: &mut [f32; BLOCK_SIZE]) {
    let d = read_f16([block[D], block[D + 1]]);
    let dmin = read_f16([block[DMIN], block[DMIN + 1]]);
    let mut packed = [0u8; 12];
    packed.copy_from_slice(&block[SCALES..SCALES + 12]);
    let (sc, mn) = unpack_k4(&packed);
    for (e, y) in out.iter_mut().enumerate() {
        let (c, r) = (e / 64, e % 64);
        let low = (block[QS + 32 * c + r % 32] >> (4 * (r / 32))) & 0x0F;
        let high = (block[QH + e % 32] >> (e / 32)) & 1;
        let q = low | (high << 4);
        let s = e / 32;
        let dl = d * f32::from(sc[s]);
        let ml = dmin * f32::from(mn[s]);
        *y = dl * f32::from(q) - ml;
    }
}
