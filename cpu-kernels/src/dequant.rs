//! Dequantization of weight rows to f32, for paths that multiply in f32.

use kiln_ir::quant::QuantType;

/// Dequantizes `k` elements (a whole number of blocks) of the weight row at `src` (raw
/// GGUF blocks of type `w`) into the f32 row `dst`.
///
/// The values are those of [`kiln_ir::quant::dequantize`] (bit for bit: this calls it).
///
/// # Safety
/// `src` must be valid for reading `w.bytes_for(k)` bytes and `dst` for writing `k` f32,
/// and they must not overlap.
///
/// # Panics
/// If `k` is not a multiple of `w.block_size()`.
pub unsafe fn dequantize_row(w: QuantType, k: usize, src: *const u8, dst: *mut f32) {
    let bytes = w.bytes_for(k).unwrap_or_else(|| {
        panic!("dequantize_row: {k} elements is not a whole number of {w} blocks")
    });
    // SAFETY: the caller guarantees `bytes` readable bytes at `src` and `k` writable f32
    // at `dst`, not overlapping.
    let (src, dst) = unsafe {
        (
            std::slice::from_raw_parts(src, bytes),
            std::slice::from_raw_parts_mut(dst, k),
        )
    };
    kiln_ir::quant::dequantize(w, src, dst).expect("lengths checked above");
}
