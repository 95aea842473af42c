//! AVX2 dot products of quantized weight rows with quantized activation rows.
//!
//! The techniques are llama.cpp's (ggml `arch/x86/quants.c`), written afresh:
//!
//! * weight quants are unpacked to **unsigned** bytes (nibbles, plus high bits for the
//!   5- and 6-bit types) and multiplied with the signed activation bytes by
//!   `vpmaddubsw` (pairwise sums to i16, which cannot saturate at these ranges), then
//!   widened by `vpmaddwd` (against ones, or against the K types' sub-block scales);
//! * the offset of an unsigned quant (`q - 8`, `q - 16`, `q - 32`) is subtracted as
//!   `offset × sum(activations)`, computed once per activation block (or from the `Q8_K`
//!   block sums), never per element;
//! * per block, one FMA scales the eight i32 lane sums (as f32) by `d_w × d_a` into an
//!   eight-lane f32 accumulator; the lanes are summed once per row at the end.
//!
//! A pass over an activation row serves several weight rows at once ([`dot_rows`]): the
//! activation block and its sums are loaded and computed once per block, not once per row.
//! `Q2_K` and `Q3_K` have no SIMD kernel and use the portable integer code.

use std::arch::x86_64::*;
use std::cell::RefCell;

use kiln_ir::quant::QuantType;

use super::portable;
use crate::dot_f32::avx2::hsum;

/// One weight type's block kernel against its activation type.
trait Kernel {
    /// Bytes of one weight block.
    const W_BYTES: usize;
    /// Bytes of one activation block.
    const A_BYTES: usize;
    /// What is computed once per activation block and shared by every weight row.
    type Act: Copy;

    /// Prepares the activation block at `y`.
    ///
    /// # Safety
    /// AVX2/FMA/F16C; `y` readable for `A_BYTES`.
    unsafe fn act(y: *const u8) -> Self::Act;

    /// Adds the dot product of the weight block at `x` with the activation block to the
    /// lane accumulator `acc` (and scalar parts to `accs`); returns the new `acc`.
    ///
    /// # Safety
    /// AVX2/FMA/F16C; `x` readable for `W_BYTES`, `a` from [`Kernel::act`] on a live block.
    unsafe fn block(x: *const u8, a: &Self::Act, acc: __m256, accs: &mut f32) -> __m256;
}

/// f16 at `p`, widened with F16C.
///
/// # Safety
/// F16C; `p` readable for 2 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fp16(p: *const u8) -> f32 {
    // SAFETY: two readable bytes (caller contract).
    let bits = unsafe { std::ptr::read_unaligned(p as *const u16) };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// For a block with a minimum (`Q4_1`, `Q5_1`: f16 `d` and `m` at `p`): adds
/// `m × dy × sum(y)` to the row's scalar accumulator and returns `d × dy` broadcast, the
/// scale of the block's quant dot. Both f16 are widened by one F16C conversion.
///
/// # Safety
/// F16C; `p` readable for 4 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale_with_min(p: *const u8, a: &Q8Act, accs: &mut f32) -> __m256 {
    // SAFETY: four readable bytes (caller contract).
    let bits = unsafe { std::ptr::read_unaligned(p as *const u32) };
    let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
    *accs += _mm_cvtss_f32(_mm_movehdup_ps(dm)) * a.ysum;
    _mm256_broadcastss_ps(_mm_mul_ss(dm, _mm_set_ss(a.dy)))
}

/// f32 at `p` (any alignment).
///
/// # Safety
/// `p` readable for 4 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f32_at(p: *const u8) -> f32 {
    // SAFETY: caller contract.
    unsafe { crate::bytes::f32_at(p) }
}

/// 32 bytes at `p`.
///
/// # Safety
/// AVX; `p` readable for 32 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load32(p: *const u8) -> __m256i {
    // SAFETY: caller contract; loadu has no alignment requirement.
    unsafe { _mm256_loadu_si256(p as *const __m256i) }
}

/// The 32 nibbles of 16 bytes at `p` as bytes `0..16`: byte `i` of the result is the low
/// nibble of byte `i` for `i < 16` and the high nibble of byte `i - 16` after.
///
/// # Safety
/// AVX2; `p` readable for 16 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles32(p: *const u8) -> __m256i {
    // SAFETY: caller contract.
    let lo = unsafe { _mm_loadu_si128(p as *const __m128i) };
    let hi = _mm_srli_epi16::<4>(lo);
    _mm256_and_si256(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(0x0F))
}

/// The 32 bits of the little-endian u32 at `p`, one per byte: byte `e` is `0xFF` when
/// bit `e` is set, else 0.
///
/// # Safety
/// AVX2; `p` readable for 4 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bits32(p: *const u8) -> __m256i {
    // SAFETY: caller contract.
    let w = unsafe { std::ptr::read_unaligned(p as *const u32) };
    let v = _mm256_set1_epi32(w as i32);
    // Byte e takes source byte e / 8 ...
    let spread = _mm256_shuffle_epi8(
        v,
        _mm256_setr_epi64x(
            0,
            0x0101_0101_0101_0101,
            0x0202_0202_0202_0202,
            0x0303_0303_0303_0303,
        ),
    );
    // ... and keeps bit e % 8: or-ing every other bit in makes the byte all ones iff it is set.
    let other = _mm256_set1_epi64x(0x7FBF_DFEF_F7FB_FDFEu64 as i64);
    _mm256_cmpeq_epi8(_mm256_or_si256(spread, other), _mm256_set1_epi64x(-1))
}

/// Eight lane sums of the i16 pairs of `v`, as i32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn widen(v: __m256i) -> __m256i {
    _mm256_madd_epi16(v, _mm256_set1_epi16(1))
}

/// A `Q8_0` activation block, prepared for the 32-element weight types.
#[derive(Clone, Copy)]
struct Q8Act {
    /// The 32 quants.
    qy: __m256i,
    /// The scale.
    dy: f32,
    /// `offset × quants`, pairwise (i16), for the types with an offset (`Q4_0`, `Q5_0`).
    corr: __m256i,
    /// `dy × sum(quants)`, for the types with a minimum (`Q4_1`, `Q5_1`).
    ysum: f32,
}

/// Loads a `Q8_0` activation block with the offset correction for `offset`.
///
/// # Safety
/// AVX2/FMA/F16C; `y` readable for 34 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_act(y: *const u8, offset: i8, with_sum: bool) -> Q8Act {
    // SAFETY: 34 readable bytes (caller contract).
    let (qy, dy) = unsafe { (load32(y.add(2)), fp16(y)) };
    let corr = _mm256_maddubs_epi16(_mm256_set1_epi8(offset), qy);
    let ysum = if with_sum {
        let s = widen(_mm256_maddubs_epi16(_mm256_set1_epi8(1), qy));
        hsum(_mm256_cvtepi32_ps(s)) * dy
    } else {
        0.0
    };
    Q8Act { qy, dy, corr, ysum }
}

struct Q4_0;
impl Kernel for Q4_0 {
    const W_BYTES: usize = 18;
    const A_BYTES: usize = 34;
    type Act = Q8Act;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn act(y: *const u8) -> Q8Act {
        // SAFETY: forwarded.
        unsafe { q8_act(y, 8, false) }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block(x: *const u8, a: &Q8Act, acc: __m256, _: &mut f32) -> __m256 {
        // SAFETY: 18 readable bytes (caller contract).
        let (d, q) = unsafe { (fp16(x), nibbles32(x.add(2))) };
        // sum (q - 8) y = sum q y - 8 sum y
        let p = _mm256_sub_epi16(_mm256_maddubs_epi16(q, a.qy), a.corr);
        let s = _mm256_cvtepi32_ps(widen(p));
        _mm256_fmadd_ps(_mm256_set1_ps(d * a.dy), s, acc)
    }
}

struct Q4_1;
impl Kernel for Q4_1 {
    const W_BYTES: usize = 20;
    const A_BYTES: usize = 34;
    type Act = Q8Act;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn act(y: *const u8) -> Q8Act {
        // SAFETY: forwarded.
        unsafe { q8_act(y, 0, true) }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block(x: *const u8, a: &Q8Act, acc: __m256, accs: &mut f32) -> __m256 {
        // SAFETY: 20 readable bytes (caller contract).
        let (scale, q) = unsafe { (scale_with_min(x, a, accs), nibbles32(x.add(4))) };
        let s = _mm256_cvtepi32_ps(widen(_mm256_maddubs_epi16(q, a.qy)));
        _mm256_fmadd_ps(scale, s, acc)
    }
}

struct Q5_0;
impl Kernel for Q5_0 {
    const W_BYTES: usize = 22;
    const A_BYTES: usize = 34;
    type Act = Q8Act;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn act(y: *const u8) -> Q8Act {
        // SAFETY: forwarded.
        unsafe { q8_act(y, 16, false) }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block(x: *const u8, a: &Q8Act, acc: __m256, _: &mut f32) -> __m256 {
        // SAFETY: 22 readable bytes (caller contract).
        let (d, lo, hb) = unsafe { (fp16(x), nibbles32(x.add(6)), bits32(x.add(2))) };
        let q = _mm256_or_si256(lo, _mm256_and_si256(hb, _mm256_set1_epi8(0x10)));
        let p = _mm256_sub_epi16(_mm256_maddubs_epi16(q, a.qy), a.corr);
        let s = _mm256_cvtepi32_ps(widen(p));
        _mm256_fmadd_ps(_mm256_set1_ps(d * a.dy), s, acc)
    }
}

struct Q5_1;
impl Kernel for Q5_1 {
    const W_BYTES: usize = 24;
    const A_BYTES: usize = 34;
    type Act = Q8Act;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn act(y: *const u8) -> Q8Act {
        // SAFETY: forwarded.
        unsafe { q8_act(y, 0, true) }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block(x: *const u8, a: &Q8Act, acc: __m256, accs: &mut f32) -> __m256 {
        // SAFETY: 24 readable bytes (caller contract).
        let (scale, lo, hb) = unsafe {
            (
                scale_with_min(x, a, accs),
                nibbles32(x.add(8)),
                bits32(x.add(4)),
            )
        };
        let q = _mm256_or_si256(lo, _mm256_and_si256(hb, _mm256_set1_epi8(0x10)));
        let s = _mm256_cvtepi32_ps(widen(_mm256_maddubs_epi16(q, a.qy)));
        _mm256_fmadd_ps(scale, s, acc)
    }
}

struct Q8_0;
impl Kernel for Q8_0 {
    const W_BYTES: usize = 34;
    const A_BYTES: usize = 34;
    type Act = Q8Act;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn act(y: *const u8) -> Q8Act {
        // SAFETY: forwarded.
        unsafe { q8_act(y, 0, false) }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block(x: *const u8, a: &Q8Act, acc: __m256, _: &mut f32) -> __m256 {
        // SAFETY: 34 readable bytes (caller contract).
        let (d, qx) = unsafe { (fp16(x), load32(x.add(2))) };
        // signed × signed: |x| × (y with x's sign); |-128| = 128 is right as unsigned.
        let p = _mm256_maddubs_epi16(_mm256_sign_epi8(qx, qx), _mm256_sign_epi8(a.qy, qx));
        let s = _mm256_cvtepi32_ps(widen(p));
        _mm256_fmadd_ps(_mm256_set1_ps(d * a.dy), s, acc)
    }
}

/// A `Q8_K` activation block, prepared for the K weight types.
#[derive(Clone, Copy)]
struct QkAct {
    /// The block (quants at `y + 4`).
    y: *const u8,
    /// The f32 scale.
    dy: f32,
    /// The sixteen i16 sums of 16 quants.
    bsums: __m256i,
    /// The eight i16 sums of 32 quants (pairs of `bsums`).
    bsums32: __m128i,
}

/// Loads a `Q8_K` activation block's scale and sums.
///
/// # Safety
/// AVX2/FMA/F16C; `y` readable for 292 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn qk_act(y: *const u8) -> QkAct {
    // SAFETY: 292 readable bytes (caller contract).
    let (dy, bsums) = unsafe { (f32_at(y), load32(y.add(260))) };
    let bsums32 = _mm_hadd_epi16(
        _mm256_castsi256_si128(bsums),
        _mm256_extracti128_si256::<1>(bsums),
    );
    QkAct {
        y,
        dy,
        bsums,
        bsums32,
    }
}

/// The eight 6-bit scales then the eight 6-bit minimums of a `Q4_K`/`Q5_K` block (whose
/// 12 packed bytes are at `p`) as sixteen i16: scales in the low lane, minimums in the
/// high lane.
///
/// # Safety
/// AVX2; `p` readable for 12 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k4_scales_mins(p: *const u8) -> __m256i {
    let mut u = [0u32; 4];
    // SAFETY: 12 readable bytes into the first three words.
    unsafe { std::ptr::copy_nonoverlapping(p, u.as_mut_ptr() as *mut u8, 12) };
    let (b0, b1, b2) = (u32::from_le(u[0]), u32::from_le(u[1]), u32::from_le(u[2]));
    const LOW6: u32 = 0x3F3F_3F3F;
    const LOW4: u32 = 0x0F0F_0F0F;
    const LOW2: u32 = 0x0303_0303;
    let sc_lo = b0 & LOW6;
    let sc_hi = (b2 & LOW4) | (((b0 >> 6) & LOW2) << 4);
    let mn_lo = b1 & LOW6;
    let mn_hi = ((b2 >> 4) & LOW4) | (((b1 >> 6) & LOW2) << 4);
    let v = _mm_setr_epi32(sc_lo as i32, sc_hi as i32, mn_lo as i32, mn_hi as i32);
    _mm256_cvtepu8_epi16(v)
}

/// A shuffle that broadcasts i16 lane `s` (0..8) of a 128-bit lane to all eight.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bcast16(s: usize) -> __m256i {
    let b = (2 * s) as i16;
    _mm256_set1_epi16(((b + 1) << 8) | b)
}

/// Shared by `Q4_K` and `Q5_K`: `quants(c)` gives the unsigned quants of the 64-element
/// chunk `c` as (first 32, last 32).
///
/// # Safety
/// AVX2/FMA/F16C; `x` a readable block, `a` a live activation block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k4_like(
    x: *const u8,
    a: &QkAct,
    acc: __m256,
    accs: &mut f32,
    quants: impl Fn(usize) -> (__m256i, __m256i),
) -> __m256 {
    // SAFETY: the block's 16-byte header is readable.
    let (d, dmin, ms) = unsafe { (fp16(x), fp16(x.add(2)), k4_scales_mins(x.add(4))) };
    // Minimums: dmin * dy * sum_s mn_s * (sum of the sub-block's 32 quants).
    let mins = _mm256_extracti128_si256::<1>(ms);
    let pm = _mm_madd_epi16(mins, a.bsums32);
    let pm = _mm_add_epi32(pm, _mm_unpackhi_epi64(pm, pm));
    let pm = _mm_add_epi32(pm, _mm_shuffle_epi32::<1>(pm));
    *accs -= dmin * a.dy * _mm_cvtsi128_si32(pm) as f32;
    let sc = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(ms));
    let mut sumi = _mm256_setzero_si256();
    for c in 0..4 {
        let (q0, q1) = quants(c);
        // SAFETY: quants 64 c .. 64 c + 64 of the activation block are readable.
        let (y0, y1) = unsafe { (load32(a.y.add(4 + 64 * c)), load32(a.y.add(36 + 64 * c))) };
        let p0 = _mm256_madd_epi16(
            _mm256_maddubs_epi16(q0, y0),
            _mm256_shuffle_epi8(sc, bcast16(2 * c)),
        );
        let p1 = _mm256_madd_epi16(
            _mm256_maddubs_epi16(q1, y1),
            _mm256_shuffle_epi8(sc, bcast16(2 * c + 1)),
        );
        sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p0, p1));
    }
    _mm256_fmadd_ps(_mm256_set1_ps(d * a.dy), _mm256_cvtepi32_ps(sumi), acc)
}

struct Q4K;
impl Kernel for Q4K {
    const W_BYTES: usize = 144;
    const A_BYTES: usize = 292;
    type Act = QkAct;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn act(y: *const u8) -> QkAct {
        // SAFETY: forwarded.
        unsafe { qk_act(y) }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block(x: *const u8, a: &QkAct, acc: __m256, accs: &mut f32) -> __m256 {
        let m4 = _mm256_set1_epi8(0x0F);
        // SAFETY: the block is readable; chunk c's 32 bytes are at 16 + 32 c.
        unsafe {
            k4_like(x, a, acc, accs, |c| {
                let q = load32(x.add(16 + 32 * c));
                (
                    _mm256_and_si256(q, m4),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4),
                )
            })
        }
    }
}

struct Q5K;
impl Kernel for Q5K {
    const W_BYTES: usize = 176;
    const A_BYTES: usize = 292;
    type Act = QkAct;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn act(y: *const u8) -> QkAct {
        // SAFETY: forwarded.
        unsafe { qk_act(y) }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block(x: *const u8, a: &QkAct, acc: __m256, accs: &mut f32) -> __m256 {
        let m4 = _mm256_set1_epi8(0x0F);
        let one = _mm256_set1_epi8(1);
        // SAFETY: the block is readable: high bits at 16..48, nibbles at 48..176.
        unsafe {
            let hb = load32(x.add(16));
            k4_like(x, a, acc, accs, |c| {
                let q = load32(x.add(48 + 32 * c));
                let shift = _mm_cvtsi32_si128(2 * c as i32);
                let h0 = _mm256_and_si256(_mm256_srl_epi16(hb, shift), one);
                let shift = _mm_cvtsi32_si128(2 * c as i32 + 1);
                let h1 = _mm256_and_si256(_mm256_srl_epi16(hb, shift), one);
                (
                    _mm256_or_si256(_mm256_and_si256(q, m4), _mm256_slli_epi16::<4>(h0)),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4),
                        _mm256_slli_epi16::<4>(h1),
                    ),
                )
            })
        }
    }
}

struct Q6K;
impl Kernel for Q6K {
    const W_BYTES: usize = 210;
    const A_BYTES: usize = 292;
    type Act = QkAct;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn act(y: *const u8) -> QkAct {
        // SAFETY: forwarded.
        unsafe { qk_act(y) }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block(x: *const u8, a: &QkAct, acc: __m256, _: &mut f32) -> __m256 {
        let m4 = _mm256_set1_epi8(0x0F);
        let m2 = _mm256_set1_epi8(0x03);
        // SAFETY: the 210-byte block and the activation block are readable (caller
        // contract); every offset below is inside them.
        unsafe {
            let d = fp16(x.add(208));
            let sc = _mm256_cvtepi8_epi16(_mm_loadu_si128(x.add(192) as *const __m128i));
            // The quants are stored + 32: subtract 32 * sum_s sc_s * bsum_s.
            let corr = _mm256_madd_epi16(sc, a.bsums);
            let mut sumi = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<5>(corr));
            for h in 0..2 {
                let sch = if h == 0 {
                    _mm256_permute2x128_si256::<0x00>(sc, sc)
                } else {
                    _mm256_permute2x128_si256::<0x11>(sc, sc)
                };
                let ql0 = load32(x.add(64 * h));
                let ql1 = load32(x.add(64 * h + 32));
                let qh = load32(x.add(128 + 32 * h));
                for g in 0..4 {
                    let low = if g % 2 == 0 { ql0 } else { ql1 };
                    let low = if g < 2 {
                        low
                    } else {
                        _mm256_srli_epi16::<4>(low)
                    };
                    let low = _mm256_and_si256(low, m4);
                    let high =
                        _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * g as i32)), m2);
                    let q = _mm256_or_si256(low, _mm256_slli_epi16::<4>(high));
                    let yv = load32(a.y.add(4 + 128 * h + 32 * g));
                    // Low lane: sub-block 8h + 2g, high lane: 8h + 2g + 1.
                    let lo = (4 * g) as i16;
                    let hi = (4 * g + 2) as i16;
                    let mask = _mm256_set_m128i(
                        _mm_set1_epi16(((hi + 1) << 8) | hi),
                        _mm_set1_epi16(((lo + 1) << 8) | lo),
                    );
                    let p = _mm256_madd_epi16(
                        _mm256_maddubs_epi16(q, yv),
                        _mm256_shuffle_epi8(sch, mask),
                    );
                    sumi = _mm256_add_epi32(sumi, p);
                }
            }
            _mm256_fmadd_ps(_mm256_set1_ps(d * a.dy), _mm256_cvtepi32_ps(sumi), acc)
        }
    }
}

struct Q8K;
impl Kernel for Q8K {
    const W_BYTES: usize = 292;
    const A_BYTES: usize = 292;
    type Act = QkAct;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn act(y: *const u8) -> QkAct {
        // SAFETY: forwarded.
        unsafe { qk_act(y) }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block(x: *const u8, a: &QkAct, acc: __m256, _: &mut f32) -> __m256 {
        // SAFETY: both 292-byte blocks are readable (caller contract).
        unsafe {
            let mut sumi = _mm256_setzero_si256();
            for c in 0..8 {
                let qx = load32(x.add(4 + 32 * c));
                let qy = load32(a.y.add(4 + 32 * c));
                let p = _mm256_maddubs_epi16(_mm256_sign_epi8(qx, qx), _mm256_sign_epi8(qy, qx));
                sumi = _mm256_add_epi32(sumi, widen(p));
            }
            let d = f32_at(x) * a.dy;
            _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc)
        }
    }
}

/// Dot products of `R` weight rows (`x`, `x + stride`, ...) with one activation row whose
/// prepared blocks are `acts` (one per block), written to `out[0..R]`.
///
/// # Safety
/// AVX2/FMA/F16C; the weight rows readable for `acts.len()` blocks, `out` writable for
/// `R` f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_rows<K: Kernel, const R: usize>(
    acts: &[K::Act],
    x: *const u8,
    stride: usize,
    out: *mut f32,
) {
    let mut acc = [_mm256_setzero_ps(); R];
    let mut accs = [0.0f32; R];
    for (b, a) in acts.iter().enumerate() {
        // SAFETY: block b of each weight row is readable; prefetches never fault.
        unsafe {
            // The next pass's rows (the `R` rows after these, contiguous in a matrix),
            // swept as far per block as this pass reads.
            let next = x.wrapping_add(R * stride + b * R * K::W_BYTES);
            for line in (0..R * K::W_BYTES).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(line) as *const i8);
            }
            for j in 0..R {
                acc[j] = K::block(x.add(j * stride + b * K::W_BYTES), a, acc[j], &mut accs[j]);
            }
        }
    }
    for j in 0..R {
        // SAFETY: out has R writable f32.
        unsafe { *out.add(j) = hsum(acc[j]) + accs[j] };
    }
}

/// Weight rows per pass over an activation row.
const ROWS: usize = 4;

/// 32 bytes at 32-byte alignment: the unit of [`PREPARED`], which holds prepared activation
/// blocks of any kernel type (each contains AVX2 vectors, so needs at most this alignment).
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Slot([u8; 32]);

thread_local! {
    /// Per-thread storage for [`with_prepared`]: grown to the largest product seen, never
    /// shrunk, so decode's hundreds of products per token allocate nothing.
    static PREPARED: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with the prepared blocks ([`Kernel::act`]) of `m` activation rows of `nb`
/// blocks each, row after row, held in this thread's [`PREPARED`] storage. `f` must not
/// call `with_prepared` itself (the storage is borrowed while it runs).
///
/// # Safety
/// AVX2/FMA/F16C; each row (`a_stride` bytes apart from `act`) readable for `nb` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn with_prepared<K: Kernel, T>(
    m: usize,
    nb: usize,
    act: *const u8,
    a_stride: usize,
    f: impl FnOnce(&[K::Act]) -> T,
) -> T {
    const { assert!(std::mem::align_of::<K::Act>() <= std::mem::align_of::<Slot>()) };
    let count = m * nb;
    let slots = (count * std::mem::size_of::<K::Act>()).div_ceil(std::mem::size_of::<Slot>());
    PREPARED.with(|cell| {
        let mut buf = cell.borrow_mut();
        if buf.len() < slots {
            buf.resize(slots, Slot([0; 32]));
        }
        // The slots are 32-byte aligned and `size_of::<K::Act>()` is a multiple of its
        // alignment (at most 32), so every element lies aligned inside the buffer.
        let base = buf.as_mut_ptr().cast::<K::Act>();
        for i in 0..m {
            for b in 0..nb {
                // SAFETY: block b of row i is readable (caller contract); element
                // `i * nb + b < count` lies inside the buffer (`Act` is `Copy`: nothing
                // to drop when it is overwritten).
                unsafe {
                    base.add(i * nb + b)
                        .write(K::act(act.add(i * a_stride + b * K::A_BYTES)))
                };
            }
        }
        // SAFETY: the first `count` elements were just written.
        f(unsafe { std::slice::from_raw_parts(base, count) })
    })
}

/// `gemm_nt_q` for one kernel type: the activation blocks are prepared once, then weight
/// rows go in groups of [`ROWS`] (outer, so each group is read from memory once),
/// activation rows inner.
///
/// # Safety
/// AVX2/FMA/F16C; contract of [`crate::gemm_nt_q`].
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_kernel<K: Kernel>(
    m: usize,
    n: usize,
    nb: usize,
    act: *const u8,
    a_stride: usize,
    wq: *const u8,
    w_stride: usize,
    c: *mut f32,
    ldc: usize,
) {
    let body = |acts: &[K::Act]| {
        let mut j = 0;
        while j < n {
            let r = ROWS.min(n - j);
            for i in 0..m {
                let mut out = [0.0f32; ROWS];
                let y = &acts[i * nb..(i + 1) * nb];
                // SAFETY: weight rows j..j + r are readable (caller contract).
                unsafe {
                    let x = wq.add(j * w_stride);
                    match r {
                        4 => dot_rows::<K, 4>(y, x, w_stride, out.as_mut_ptr()),
                        3 => dot_rows::<K, 3>(y, x, w_stride, out.as_mut_ptr()),
                        2 => dot_rows::<K, 2>(y, x, w_stride, out.as_mut_ptr()),
                        _ => dot_rows::<K, 1>(y, x, w_stride, out.as_mut_ptr()),
                    }
                }
                for (t, v) in out.iter().take(r).enumerate() {
                    // SAFETY: (i, j + t) is inside C.
                    unsafe { *c.add(i * ldc + j + t) = *v };
                }
            }
            j += r;
        }
    };
    // SAFETY: the activation rows are readable (caller contract).
    unsafe { with_prepared::<K, ()>(m, nb, act, a_stride, body) };
}

/// AVX2 [`crate::vec_dot_q`] (`k` already checked).
///
/// # Safety
/// AVX2/FMA/F16C; contract of [`crate::vec_dot_q`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn vec_dot(w: QuantType, k: usize, x: *const u8, y: *const u8) -> f32 {
    let mut out = 0.0f32;
    // SAFETY: one activation row and one weight row (forwarded contract) into one f32.
    unsafe { gemm_nt_q(w, 1, 1, k, y, 0, x, 0, &mut out, 1) };
    out
}

/// AVX2 [`crate::gemm_nt_q`] (`k` already checked).
///
/// # Safety
/// AVX2/FMA/F16C; contract of [`crate::gemm_nt_q`].
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm_nt_q(
    w: QuantType,
    m: usize,
    n: usize,
    k: usize,
    act: *const u8,
    a_stride: usize,
    wq: *const u8,
    w_stride: usize,
    c: *mut f32,
    ldc: usize,
) {
    let nb = k / w.block_size();
    // SAFETY: forwarded contract.
    unsafe {
        match w {
            QuantType::Q4_0 => gemm_kernel::<Q4_0>(m, n, nb, act, a_stride, wq, w_stride, c, ldc),
            QuantType::Q4_1 => gemm_kernel::<Q4_1>(m, n, nb, act, a_stride, wq, w_stride, c, ldc),
            QuantType::Q5_0 => gemm_kernel::<Q5_0>(m, n, nb, act, a_stride, wq, w_stride, c, ldc),
            QuantType::Q5_1 => gemm_kernel::<Q5_1>(m, n, nb, act, a_stride, wq, w_stride, c, ldc),
            QuantType::Q8_0 => gemm_kernel::<Q8_0>(m, n, nb, act, a_stride, wq, w_stride, c, ldc),
            QuantType::Q4_K => gemm_kernel::<Q4K>(m, n, nb, act, a_stride, wq, w_stride, c, ldc),
            QuantType::Q5_K => gemm_kernel::<Q5K>(m, n, nb, act, a_stride, wq, w_stride, c, ldc),
            QuantType::Q6_K => gemm_kernel::<Q6K>(m, n, nb, act, a_stride, wq, w_stride, c, ldc),
            QuantType::Q8_K => gemm_kernel::<Q8K>(m, n, nb, act, a_stride, wq, w_stride, c, ldc),
            QuantType::Q2_K | QuantType::Q3_K => {
                portable::gemm_nt_q(w, m, n, k, act, a_stride, wq, w_stride, c, ldc)
            }
        }
    }
}
