//! Reading little-endian scalars inside quantized blocks.

/// The little-endian f32 at `p` (any alignment).
///
/// # Safety
/// `p` must be valid for reading 4 bytes.
#[inline(always)]
pub(crate) unsafe fn f32_at(p: *const u8) -> f32 {
    // SAFETY: the caller guarantees four readable bytes at `p`.
    let bits = unsafe { std::ptr::read_unaligned(p as *const u32) };
    f32::from_bits(u32::from_le(bits))
}
