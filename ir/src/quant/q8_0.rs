//! `Q8_0`: 32 elements in 34 bytes.
//!
//! | bytes    | field | contents                           |
//! |----------|-------|------------------------------------|
//! | `0..2`   | `d`   | f16 scale                          |
//! | `2..34`  | `qs`  | one signed byte (`i8`) per element |
//!
//! Element value: `d * q`, `q` in `-128..128`.

use super::{read_f16, QuantType};

pub(super) const BLOCK_SIZE: usize = 32;
pub(super) const BLOCK_BYTES: usize = 34;
const _: () = assert!(
    BLOCK_SIZE == QuantType::Q8_0.block_size() && BLOCK_BYTES == QuantType::Q8_0.block_bytes()
);

const QS: usize = 2;

pub(super) fn dequantize_block(block: &[u8; BLOCK_BYTES], out: &mut [f32; BLOCK_SIZE]) {
    let d = read_f16([block[0], block[1]]);
    for (e, y) in out.iter_mut().enumerate() {
        let q = block[QS + e] as i8;
        *y = d * f32::from(q);
    }
}
