//! The 12-byte packing of eight 6-bit scales and eight 6-bit minimums shared by `Q4_K` and
//! `Q5_K` (ggml's `get_scale_min_k4`).
//!
//! With `sc[j]` the scale and `mn[j]` the minimum of sub-block `j` (bits written high to low):
//!
//! | byte     | bits                                           |
//! |----------|------------------------------------------------|
//! | `0..4`   | byte `j`: `sc[j + 4]` bits 5..4, `sc[j]` (6 bits) |
//! | `4..8`   | byte `4 + j`: `mn[j + 4]` bits 5..4, `mn[j]` (6 bits) |
//! | `8..12`  | byte `8 + j`: `mn[j + 4]` bits 3..0, `sc[j + 4]` bits 3..0 |
//!
//! for `j` in `0..4`.

/// Unpacks the eight 6-bit scales and eight 6-bit minimums, each in `0..64`.
pub(super) fn unpack_k4(packed: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut mn = [0u8; 8];
    for j in 0..4 {
        sc[j] = packed[j] & 0x3F;
        mn[j] = packed[j + 4] & 0x3F;
        sc[j + 4] = (packed[j + 8] & 0x0F) | ((packed[j] >> 6) << 4);
        mn[j + 4] = (packed[j + 8] >> 4) | ((packed[j + 4] >> 6) << 4);
    }
    (sc, mn)
}

#[cfg(test)]
mod tests {
    use super::unpack_k4;

    #[test]
    fn unpacks_each_field_from_its_own_bits() {
        // sc = 0..8 + 1, mn = 63 - j, packed by hand following the table above.
        let sc: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
        let mn: [u8; 8] = [63, 62, 61, 60, 59, 58, 57, 56];
        let mut packed = [0u8; 12];
        for j in 0..4 {
            packed[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            packed[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
            packed[j + 8] = (sc[j + 4] & 0x0F) | ((mn[j + 4] & 0x0F) << 4);
        }
        assert_eq!(unpack_k4(&packed), (sc, mn));
        // All ones: every field is 63.
        assert_eq!(unpack_k4(&[0xFF; 12]), ([63; 8], [63; 8]));
    }
}
