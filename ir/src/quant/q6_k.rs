//! `Q6_K`: 256 elements in 210 bytes, as 16 sub-blocks of 16 elements.
//!
//! | bytes      | field    | contents                                                    |
//! |------------|----------|-------------------------------------------------------------|
//! | `0..128`   | `ql`     | low 4 bits of the quants, see below                         |
//! | `128..192` | `qh`     | high 2 bits of the quants, see below                        |
//! | `192..208` | `scales` | one signed byte (`i8`) scale per sub-block                  |
//! | `208..210` | `d`      | f16 super-block scale                                       |
//!
//! Element `e` lies in half `h = e / 128`, at `r = e % 128`, in group `g = r / 32` at
//! `l = r % 32`. Its low bits are `(ql[64 h + 32 (g % 2) + l] >> (4 (g / 2))) & 15` and its
//! high bits `(qh[32 h + l] >> (2 g)) & 3`; `q = (low | high << 4) - 32` is in `-32..32`. It
//! belongs to sub-block `s = e / 16`.
//!
//! Element value: `(d * scales[s]) * q`, each product rounded to f32.

use super::{read_f16, QuantType};

pub(super) const BLOCK_SIZE: usize = 256;
pub(super) const BLOCK_BYTES: usize = 210;
const _: () = assert!(
    BLOCK_SIZE == QuantType::Q6_K.block_size() && BLOCK_BYTES == QuantType::Q6_K.block_bytes()
);

const QL: usize = 0;
const QH: usize = 128;
const SCALES: usize = 192;
const D: usize = 208;

pub(super) fn dequantize_block(block: &[u8; BLOCK_BYTES], out: &mut [f32; BLOCK_SIZE]) {
    let d = read_f16([block[D], block[D + 1]]);
    for (e, y) in out.iter_mut().enumerate() {
        let (h, r) = (e / 128, e % 128);
        let (g, l) = (r / 32, r % 32);
        let low = (block[QL + 64 * h + 32 * (g % 2) + l] >> (4 * (g / 2))) & 0x0F;
        let high = (block[QH + 32 * h + l] >> (2 * g)) & 0x03;
        let q = (low | (high << 4)) as i8 - 32;
        let scale = block[SCALES + e / 16] as i8;
        let dl = d * f32::from(scale);
        *y = dl * f32::from(q);
    }
}
