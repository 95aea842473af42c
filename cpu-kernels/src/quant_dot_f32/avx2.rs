//! AVX2 dot products of quantized weight rows with f32 activation rows.
//!
//! Per eight elements of a weight block: the quant bytes are widened to 32-bit lanes
//! (`vpmovzxbd`/`vpmovsxbd`, straight from the block, or after assembling 32 quants at
//! once in byte lanes for the 2-, 3-, 5- and 6-bit K types) and masked or shifted to the
//! quant, minus the type's offset if it has one, and converted (`vcvtdq2ps`). Types with a
//! minimum then make the weights by one FMA with the (sub-)block's scale and minimum and
//! multiply them into each activation row's eight-lane accumulator; the others multiply
//! the quants in per (sub-)block and scale the sum once (see [`crate::quant_dot_f32`]).
//!
//! A pass over a weight row serves up to [`ROWS`] activation rows, so each block is
//! decoded once for all of them.

use std::arch::x86_64::*;

use kiln_ir::quant::QuantType;

use crate::dot_f32::avx2::hsum;

/// Activation rows per pass over a weight row.
const ROWS: usize = 4;

/// One weight type's block kernel.
trait Kernel {
    /// Bytes of one weight block.
    const BYTES: usize;
    /// Elements of one weight block.
    const SIZE: usize;
    /// Activation sums per block (the types with a minimum).
    const SUMS: usize;

    /// Adds the dot products of the weight block at `x` with `R` activation rows (at `a`,
    /// `lda` f32 apart, positioned at the block) to the rows' lane accumulators `acc` and
    /// scalar accumulators `accs`; `s` are the rows' activation sums for this block
    /// (`s_stride` apart).
    ///
    /// # Safety
    /// AVX2/FMA/F16C; `x` readable for `BYTES`, each activation row for `SIZE` f32 and its
    /// sums for `SUMS` f32.
    unsafe fn block<const R: usize>(
        x: *const u8,
        a: *const f32,
        lda: usize,
        s: *const f32,
        s_stride: usize,
        acc: &mut [__m256; R],
        accs: &mut [f32; R],
    );
}

/// The f16 pair at `p` (little-endian), widened: lanes 0 and 1.
///
/// # Safety
/// F16C; `p` readable for 4 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fp16x2(p: *const u8) -> __m128 {
    // SAFETY: four readable bytes (caller contract).
    let bits = unsafe { std::ptr::read_unaligned(p as *const i32) };
    _mm_cvtph_ps(_mm_cvtsi32_si128(bits))
}

/// The f16 at `p`, widened and broadcast.
///
/// # Safety
/// F16C; `p` readable for 2 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fp16_bcast(p: *const u8) -> __m256 {
    // SAFETY: two readable bytes (caller contract).
    let bits = unsafe { std::ptr::read_unaligned(p as *const u16) };
    _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// Eight bytes at `p`, zero-extended to 32-bit lanes.
///
/// # Safety
/// AVX2; `p` readable for 8 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn u8x8(p: *const u8) -> __m256i {
    // SAFETY: eight readable bytes (caller contract).
    _mm256_cvtepu8_epi32(unsafe { _mm_loadl_epi64(p as *const __m128i) })
}

/// Eight bytes at `p`, sign-extended to 32-bit lanes.
///
/// # Safety
/// AVX2; `p` readable for 8 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn i8x8(p: *const u8) -> __m256i {
    // SAFETY: eight readable bytes (caller contract).
    _mm256_cvtepi8_epi32(unsafe { _mm_loadl_epi64(p as *const __m128i) })
}

/// Lanes to f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn cvt(v: __m256i) -> __m256 {
    _mm256_cvtepi32_ps(v)
}

/// 16-bit lanes shifted left by `n` (negative: right), logically. On bytes followed by a
/// mask, bit `b` of every byte lands on bit `b + n` of the same byte wherever both are in
/// `0..8` (the bits crossing between the two bytes of a lane are masked off).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn shift16(v: __m256i, n: i32) -> __m256i {
    if n >= 0 {
        _mm256_sll_epi16(v, _mm_cvtsi32_si128(n))
    } else {
        _mm256_srl_epi16(v, _mm_cvtsi32_si128(-n))
    }
}

/// `acc[r] -= v * s_r[0..8]` for the eight sums at `s` of each row (`s_stride` apart).
///
/// # Safety
/// AVX/FMA; each row's sums readable for 8 f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn sub_sums<const R: usize>(
    v: __m256,
    s: *const f32,
    s_stride: usize,
    acc: &mut [__m256; R],
) {
    for (r, acc) in acc.iter_mut().enumerate() {
        // SAFETY: eight readable sums (caller contract).
        *acc = _mm256_fnmadd_ps(v, unsafe { _mm256_loadu_ps(s.add(r * s_stride)) }, *acc);
    }
}

/// `accs[r] += v * s_r[0]`.
///
/// # Safety
/// Each row's first sum readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn add_sum<const R: usize>(v: f32, s: *const f32, s_stride: usize, accs: &mut [f32; R]) {
    for (r, accs) in accs.iter_mut().enumerate() {
        // SAFETY: one readable sum (caller contract).
        *accs = v.mul_add(unsafe { *s.add(r * s_stride) }, *accs);
    }
}

/// For each of `R` activation rows: `acc[r] += scale * sum_t q[t] * a_r[8 t ..]` (the
/// (sub-)block's sum in a chain of its own, then one FMA into the accumulator).
///
/// # Safety
/// AVX/FMA; each row readable for `8 T` f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn accum_scaled<const T: usize, const R: usize>(
    q: &[__m256; T],
    a: *const f32,
    lda: usize,
    scale: __m256,
    acc: &mut [__m256; R],
) {
    for (r, acc) in acc.iter_mut().enumerate() {
        // SAFETY: row r holds 8 T readable f32 (caller contract).
        unsafe {
            let p = a.add(r * lda);
            let mut s = _mm256_mul_ps(q[0], _mm256_loadu_ps(p));
            for (t, q) in q.iter().enumerate().skip(1) {
                s = _mm256_fmadd_ps(*q, _mm256_loadu_ps(p.add(8 * t)), s);
            }
            *acc = _mm256_fmadd_ps(scale, s, *acc);
        }
    }
}

/// The 32 nibbles of the 16 bytes at `p` as f32: elements `0..16` are the low nibbles,
/// `16..32` the high nibbles, each OR-ed with `high[t]`, minus `offset`.
///
/// # Safety
/// AVX2; `p` readable for 16 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles(p: *const u8, high: [__m256i; 4], offset: i32) -> [__m256; 4] {
    let m4 = _mm256_set1_epi32(0x0F);
    let o = _mm256_set1_epi32(offset);
    // SAFETY: 16 readable bytes (caller contract).
    let (b0, b1) = unsafe { (u8x8(p), u8x8(p.add(8))) };
    let q = |v: __m256i, h: __m256i| {
        if offset == 0 {
            cvt(_mm256_or_si256(v, h))
        } else {
            cvt(_mm256_sub_epi32(_mm256_or_si256(v, h), o))
        }
    };
    [
        q(_mm256_and_si256(b0, m4), high[0]),
        q(_mm256_and_si256(b1, m4), high[1]),
        // Zero-extended bytes: the high nibble is the byte shifted right by 4.
        q(_mm256_srli_epi32::<4>(b0), high[2]),
        q(_mm256_srli_epi32::<4>(b1), high[3]),
    ]
}

/// The fifth bits of `Q5_0`/`Q5_1` (the little-endian u32 at `p`, bit `e` for element
/// `e`) as the value 16 or 0 in lane `e % 8` of vector `e / 8`.
///
/// # Safety
/// AVX2; `p` readable for 4 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fifth_bits(p: *const u8) -> [__m256i; 4] {
    // SAFETY: four readable bytes (caller contract).
    let qh = u32::from_le(unsafe { std::ptr::read_unaligned(p as *const u32) });
    // Bit e of `lo` (e < 16) and of `hi` (e >= 16) sits at bit 4 after shifting right by
    // e % 16.
    let lo = _mm256_set1_epi32((qh << 4) as i32);
    let hi = _mm256_set1_epi32((qh >> 12) as i32);
    let sh0 = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let sh1 = _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15);
    let m16 = _mm256_set1_epi32(16);
    [
        _mm256_and_si256(_mm256_srlv_epi32(lo, sh0), m16),
        _mm256_and_si256(_mm256_srlv_epi32(lo, sh1), m16),
        _mm256_and_si256(_mm256_srlv_epi32(hi, sh0), m16),
        _mm256_and_si256(_mm256_srlv_epi32(hi, sh1), m16),
    ]
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

/// The 32 (unsigned) bytes of `u` as f32, in four vectors of eight (bytes `0..8`, `8..16`,
/// `16..24`, `24..32`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bytes_f32(u: __m256i) -> [__m256; 4] {
    let lo = _mm256_castsi256_si128(u);
    let hi = _mm256_extracti128_si256::<1>(u);
    [
        cvt(_mm256_cvtepu8_epi32(lo)),
        cvt(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(lo, lo))),
        cvt(_mm256_cvtepu8_epi32(hi)),
        cvt(_mm256_cvtepu8_epi32(_mm_unpackhi_epi64(hi, hi))),
    ]
}

/// The 32 signed bytes of `u` as f32, in four vectors of eight.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sbytes_f32(u: __m256i) -> [__m256; 4] {
    let lo = _mm256_castsi256_si128(u);
    let hi = _mm256_extracti128_si256::<1>(u);
    [
        cvt(_mm256_cvtepi8_epi32(lo)),
        cvt(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(lo, lo))),
        cvt(_mm256_cvtepi8_epi32(hi)),
        cvt(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(hi, hi))),
    ]
}

/// The 16-element sub-blocks `2 j` and `2 j + 1` of a `Q3_K`/`Q6_K` block, whose 32
/// signed quants (in order) are the bytes of `q`, against the activations at `a` (the
/// pair's first element): `(d sc[s]) sum q x` for sub-block `s` (one scaling per
/// sub-block, as `Q8_0` per block).
///
/// # Safety
/// AVX2/FMA; each row readable for 32 f32 at `a`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pair16_offset<const R: usize>(
    q: __m256i,
    j: usize,
    sc: &[__m256; 2],
    a: *const f32,
    lda: usize,
    acc: &mut [__m256; R],
) {
    let q = sbytes_f32(q);
    // SAFETY: 32 readable f32 per row (caller contract).
    unsafe {
        accum_scaled(&[q[0], q[1]], a, lda, lane16(sc, 2 * j), acc);
        accum_scaled(&[q[2], q[3]], a.add(16), lda, lane16(sc, 2 * j + 1), acc);
    }
}

/// Lane `i` of the sixteen lanes of `v` (two vectors), broadcast.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn lane16(v: &[__m256; 2], i: usize) -> __m256 {
    _mm256_permutevar8x32_ps(v[i / 8], _mm256_set1_epi32((i % 8) as i32))
}

/// Lane `i` of `v`, broadcast.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn lane8(v: __m256, i: usize) -> __m256 {
    _mm256_permutevar8x32_ps(v, _mm256_set1_epi32(i as i32))
}

/// No high bits.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn no_high() -> [__m256i; 4] {
    [_mm256_setzero_si256(); 4]
}

/// The 32-element types with a minimum, `d q + m` (`m` the f16 at `x + 2`): `d sum q x +
/// m sum x` with the block's activation sum; or with an offset, `d (q - o)`: `q - o` in
/// the integer lanes, `d sum (q - o) x`. The quants' nibbles are at `x + qs`, their fifth
/// bits (5-bit types) in the u32 at `x + qh`.
///
/// # Safety
/// AVX2/FMA/F16C; the block, rows and (minimum) sums readable.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block32<const R: usize>(
    x: *const u8,
    a: *const f32,
    lda: usize,
    s: *const f32,
    s_stride: usize,
    acc: &mut [__m256; R],
    accs: &mut [f32; R],
    offset: Option<i32>,
    qh: Option<usize>,
    qs: usize,
) {
    // SAFETY: the block's fields, the rows and the sums are readable (caller contract).
    unsafe {
        let high = match qh {
            Some(qh) => fifth_bits(x.add(qh)),
            None => no_high(),
        };
        match offset {
            Some(o) => {
                let q = nibbles(x.add(qs), high, o);
                accum_scaled(&q, a, lda, fp16_bcast(x), acc);
            }
            None => {
                let dm = fp16x2(x);
                let q = nibbles(x.add(qs), high, 0);
                accum_scaled(&q, a, lda, _mm256_broadcastss_ps(dm), acc);
                add_sum(_mm_cvtss_f32(_mm_movehdup_ps(dm)), s, s_stride, accs);
            }
        }
    }
}

macro_rules! block32_kernel {
    ($name:ident, $bytes:expr, $sums:expr, $offset:expr, $qh:expr, $qs:expr) => {
        struct $name;
        impl Kernel for $name {
            const BYTES: usize = $bytes;
            const SIZE: usize = 32;
            const SUMS: usize = $sums;
            #[inline]
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn block<const R: usize>(
                x: *const u8,
                a: *const f32,
                lda: usize,
                s: *const f32,
                s_stride: usize,
                acc: &mut [__m256; R],
                accs: &mut [f32; R],
            ) {
                // SAFETY: forwarded contract.
                unsafe { block32(x, a, lda, s, s_stride, acc, accs, $offset, $qh, $qs) }
            }
        }
    };
}

// `d (q - 8)`, nibbles at 2.
block32_kernel!(Q4_0, 18, 0, Some(8), None, 2);
// `d q + m`, nibbles at 4.
block32_kernel!(Q4_1, 20, 1, None, None, 4);
// `d (q - 16)`, fifth bits at 2, nibbles at 6.
block32_kernel!(Q5_0, 22, 0, Some(16), Some(2), 6);
// `d q + m`, fifth bits at 4, nibbles at 8.
block32_kernel!(Q5_1, 24, 1, None, Some(4), 8);

struct Q8_0;
impl Kernel for Q8_0 {
    const BYTES: usize = 34;
    const SIZE: usize = 32;
    const SUMS: usize = 0;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block<const R: usize>(
        x: *const u8,
        a: *const f32,
        lda: usize,
        _: *const f32,
        _: usize,
        acc: &mut [__m256; R],
        _: &mut [f32; R],
    ) {
        // SAFETY: the block and rows are readable (caller contract).
        unsafe {
            let d = fp16_bcast(x);
            let q = [
                cvt(i8x8(x.add(2))),
                cvt(i8x8(x.add(10))),
                cvt(i8x8(x.add(18))),
                cvt(i8x8(x.add(26))),
            ];
            accum_scaled(&q, a, lda, d, acc);
        }
    }
}

struct Q8K;
impl Kernel for Q8K {
    const BYTES: usize = 292;
    const SIZE: usize = 256;
    const SUMS: usize = 0;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block<const R: usize>(
        x: *const u8,
        a: *const f32,
        lda: usize,
        _: *const f32,
        _: usize,
        acc: &mut [__m256; R],
        _: &mut [f32; R],
    ) {
        // SAFETY: the block and rows are readable (caller contract).
        unsafe {
            let d = _mm256_set1_ps(crate::bytes::f32_at(x));
            for c in 0..8 {
                let p = x.add(4 + 32 * c);
                let q = [
                    cvt(i8x8(p)),
                    cvt(i8x8(p.add(8))),
                    cvt(i8x8(p.add(16))),
                    cvt(i8x8(p.add(24))),
                ];
                accum_scaled(&q, a.add(32 * c), lda, d, acc);
            }
        }
    }
}

/// Sixteen 8-bit values at `p` (`signed`: as i8, else their low nibbles) times `d`, as two
/// vectors of eight.
///
/// # Safety
/// AVX2; `p` readable for 16 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scaled16(p: *const u8, d: __m256, signed: bool) -> [__m256; 2] {
    // SAFETY: 16 readable bytes (caller contract).
    let (s0, s1) = unsafe {
        if signed {
            (i8x8(p), i8x8(p.add(8)))
        } else {
            let m4 = _mm256_set1_epi32(0x0F);
            (
                _mm256_and_si256(u8x8(p), m4),
                _mm256_and_si256(u8x8(p.add(8)), m4),
            )
        }
    };
    [_mm256_mul_ps(d, cvt(s0)), _mm256_mul_ps(d, cvt(s1))]
}

struct Q2K;
impl Kernel for Q2K {
    const BYTES: usize = 84;
    const SIZE: usize = 256;
    const SUMS: usize = 16;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block<const R: usize>(
        x: *const u8,
        a: *const f32,
        lda: usize,
        s: *const f32,
        s_stride: usize,
        acc: &mut [__m256; R],
        _: &mut [f32; R],
    ) {
        // SAFETY: the 84-byte block and the rows are readable (caller contract); every
        // offset below is inside them.
        unsafe {
            let (d, dmin) = (fp16_bcast(x.add(80)), fp16_bcast(x.add(82)));
            // Sub-block s: (d sc) q - (dmin mn), sc the low and mn the high nibble of
            // byte s: (d sc) sum q x - (dmin mn) sum x.
            let sc = scaled16(x, d, false);
            for hf in 0..2 {
                let mn = cvt(_mm256_srli_epi32::<4>(u8x8(x.add(8 * hf))));
                sub_sums(_mm256_mul_ps(dmin, mn), s.add(8 * hf), s_stride, acc);
            }
            let m3 = _mm256_set1_epi8(3);
            for h in 0..2 {
                let qs = load32(x.add(16 + 32 * h));
                for g in 0..4 {
                    // Elements 128 h + 32 g + l: bits 2g, 2g + 1 of qs[l].
                    let q = bytes_f32(_mm256_and_si256(shift16(qs, -2 * g as i32), m3));
                    let sb = 8 * h + 2 * g;
                    let p = a.add(16 * sb);
                    accum_scaled(&[q[0], q[1]], p, lda, lane16(&sc, sb), acc);
                    accum_scaled(&[q[2], q[3]], p.add(16), lda, lane16(&sc, sb + 1), acc);
                }
            }
        }
    }
}

/// The sixteen signed 6-bit scales of a `Q3_K` block (12 packed bytes at `p`).
///
/// # Safety
/// `p` readable for 12 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q3_k_scales(p: *const u8) -> [i8; 16] {
    let mut b = [0u8; 12];
    // SAFETY: 12 readable bytes (caller contract).
    unsafe { std::ptr::copy_nonoverlapping(p, b.as_mut_ptr(), 12) };
    let mut out = [0i8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let low = (b[j % 8] >> (4 * (j / 8))) & 15;
        let high = (b[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = (low | (high << 4)) as i8 - 32;
    }
    out
}

struct Q3K;
impl Kernel for Q3K {
    const BYTES: usize = 110;
    const SIZE: usize = 256;
    const SUMS: usize = 0;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block<const R: usize>(
        x: *const u8,
        a: *const f32,
        lda: usize,
        _: *const f32,
        _: usize,
        acc: &mut [__m256; R],
        _: &mut [f32; R],
    ) {
        // SAFETY: the 110-byte block and the rows are readable (caller contract); every
        // offset below is inside them.
        unsafe {
            let d = fp16_bcast(x.add(108));
            let scales = q3_k_scales(x.add(96));
            // Sub-block s: (d sc) (u - 4) with u = low | high << 2, u - 4 in the bytes.
            let sc = scaled16(scales.as_ptr() as *const u8, d, true);
            let (m3, m4) = (_mm256_set1_epi8(3), _mm256_set1_epi8(4));
            let hm = load32(x);
            for h in 0..2 {
                let qs = load32(x.add(32 + 32 * h));
                for g in 0..4 {
                    // Elements 128 h + 32 g + l: bits 2g, 2g + 1 of qs[l], and bit 4h + g
                    // of hmask[l] as bit 2.
                    let low = _mm256_and_si256(shift16(qs, -2 * g as i32), m3);
                    let high = _mm256_and_si256(shift16(hm, 2 - (4 * h + g) as i32), m4);
                    let q = _mm256_sub_epi8(_mm256_or_si256(low, high), m4);
                    pair16_offset(q, 4 * h + g, &sc, a.add(128 * h + 32 * g), lda, acc);
                }
            }
        }
    }
}

/// The eight 6-bit scales and the eight 6-bit minimums of a `Q4_K`/`Q5_K` block (12
/// packed bytes at `p`), as f32 lanes.
///
/// # Safety
/// AVX2; `p` readable for 12 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k4_scales_mins(p: *const u8) -> (__m256, __m256) {
    let mut u = [0u32; 3];
    // SAFETY: 12 readable bytes into the three words.
    unsafe { std::ptr::copy_nonoverlapping(p, u.as_mut_ptr() as *mut u8, 12) };
    let (b0, b1, b2) = (u32::from_le(u[0]), u32::from_le(u[1]), u32::from_le(u[2]));
    const LOW6: u32 = 0x3F3F_3F3F;
    const LOW4: u32 = 0x0F0F_0F0F;
    const LOW2: u32 = 0x0303_0303;
    let sc_lo = b0 & LOW6;
    let sc_hi = (b2 & LOW4) | (((b0 >> 6) & LOW2) << 4);
    let mn_lo = b1 & LOW6;
    let mn_hi = ((b2 >> 4) & LOW4) | (((b1 >> 6) & LOW2) << 4);
    let sc = _mm256_cvtepu8_epi32(_mm_setr_epi32(sc_lo as i32, sc_hi as i32, 0, 0));
    let mn = _mm256_cvtepu8_epi32(_mm_setr_epi32(mn_lo as i32, mn_hi as i32, 0, 0));
    (cvt(sc), cvt(mn))
}

/// Shared by `Q4_K` and `Q5_K`: subtracts the minimum terms `(dmin mn_s) sum x` of the
/// eight sub-blocks from `acc` and returns `d × sc` per sub-block.
///
/// # Safety
/// AVX2/FMA/F16C; the block header (16 bytes at `x`) and the rows' 8 sums readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k4_header<const R: usize>(
    x: *const u8,
    s: *const f32,
    s_stride: usize,
    acc: &mut [__m256; R],
) -> __m256 {
    // SAFETY: 16 readable header bytes and 8 sums per row (caller contract).
    unsafe {
        let dm = fp16x2(x);
        let (sc, mn) = k4_scales_mins(x.add(4));
        let dmin = _mm256_broadcastss_ps(_mm_movehdup_ps(dm));
        sub_sums(_mm256_mul_ps(dmin, mn), s, s_stride, acc);
        _mm256_mul_ps(_mm256_broadcastss_ps(dm), sc)
    }
}

struct Q4K;
impl Kernel for Q4K {
    const BYTES: usize = 144;
    const SIZE: usize = 256;
    const SUMS: usize = 8;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block<const R: usize>(
        x: *const u8,
        a: *const f32,
        lda: usize,
        s: *const f32,
        s_stride: usize,
        acc: &mut [__m256; R],
        _: &mut [f32; R],
    ) {
        // SAFETY: the 144-byte block and the rows are readable (caller contract); every
        // offset below is inside them.
        unsafe {
            let sc = k4_header(x, s, s_stride, acc);
            let m4 = _mm256_set1_epi32(0x0F);
            for c in 0..4 {
                // Chunk c: sub-block 2c from the low nibbles of its 32 bytes, 2c + 1 from
                // the high nibbles.
                let p = x.add(16 + 32 * c);
                let b = [u8x8(p), u8x8(p.add(8)), u8x8(p.add(16)), u8x8(p.add(24))];
                let mut lo = [_mm256_setzero_ps(); 4];
                let mut hi = [_mm256_setzero_ps(); 4];
                for t in 0..4 {
                    lo[t] = cvt(_mm256_and_si256(b[t], m4));
                    hi[t] = cvt(_mm256_srli_epi32::<4>(b[t]));
                }
                accum_scaled(&lo, a.add(64 * c), lda, lane8(sc, 2 * c), acc);
                accum_scaled(&hi, a.add(64 * c + 32), lda, lane8(sc, 2 * c + 1), acc);
            }
        }
    }
}

struct Q5K;
impl Kernel for Q5K {
    const BYTES: usize = 176;
    const SIZE: usize = 256;
    const SUMS: usize = 8;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block<const R: usize>(
        x: *const u8,
        a: *const f32,
        lda: usize,
        s: *const f32,
        s_stride: usize,
        acc: &mut [__m256; R],
        _: &mut [f32; R],
    ) {
        // SAFETY: the 176-byte block and the rows are readable (caller contract); every
        // offset below is inside them.
        unsafe {
            let sc = k4_header(x, s, s_stride, acc);
            let (m4, m16) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x10));
            let qh = load32(x.add(16));
            for c in 0..4 {
                let q = load32(x.add(48 + 32 * c));
                // Sub-block s (of 32) takes bit s of qh[l] as bit 4.
                let (s0, s1) = (2 * c, 2 * c + 1);
                let h0 = _mm256_and_si256(shift16(qh, 4 - s0 as i32), m16);
                let h1 = _mm256_and_si256(shift16(qh, 4 - s1 as i32), m16);
                let lo = _mm256_or_si256(_mm256_and_si256(q, m4), h0);
                let hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(q), m4), h1);
                let p = a.add(64 * c);
                accum_scaled(&bytes_f32(lo), p, lda, lane8(sc, s0), acc);
                accum_scaled(&bytes_f32(hi), p.add(32), lda, lane8(sc, s1), acc);
            }
        }
    }
}

struct Q6K;
impl Kernel for Q6K {
    const BYTES: usize = 210;
    const SIZE: usize = 256;
    const SUMS: usize = 0;
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn block<const R: usize>(
        x: *const u8,
        a: *const f32,
        lda: usize,
        _: *const f32,
        _: usize,
        acc: &mut [__m256; R],
        _: &mut [f32; R],
    ) {
        // SAFETY: the 210-byte block and the rows are readable (caller contract); every
        // offset below is inside them.
        unsafe {
            let d = fp16_bcast(x.add(208));
            // Sub-block s: (d sc) (u - 32), sc the i8 at 192 + s; u - 32 in the bytes.
            let sc = scaled16(x.add(192), d, true);
            let (m4, m30, k32) = (
                _mm256_set1_epi8(0x0F),
                _mm256_set1_epi8(0x30),
                _mm256_set1_epi8(32),
            );
            for h in 0..2 {
                let ql0 = load32(x.add(64 * h));
                let ql1 = load32(x.add(64 * h + 32));
                let qh = load32(x.add(128 + 32 * h));
                // Group g's 32 quants (elements 128 h + 32 g + l): a nibble of ql0/ql1
                // and bits 2g, 2g + 1 of qh as bits 4, 5.
                let u = [
                    _mm256_or_si256(
                        _mm256_and_si256(ql0, m4),
                        _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m30),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(ql1, m4),
                        _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m30),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                        _mm256_and_si256(qh, m30),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                        _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m30),
                    ),
                ];
                for (g, u) in u.into_iter().enumerate() {
                    let q = _mm256_sub_epi8(u, k32);
                    pair16_offset(q, 4 * h + g, &sc, a.add(128 * h + 32 * g), lda, acc);
                }
            }
        }
    }
}

/// One weight row (`nb` blocks at `x`) against `R` activation rows (at `a`, `lda` apart;
/// sums at `s`, `s_stride` apart): writes `c[r * ldc]`. The weight row at `next` is
/// prefetched as far per block as this one is read (decode streams its weights from DRAM,
/// faster than the hardware prefetchers alone fetch them).
///
/// # Safety
/// AVX2/FMA/F16C; everything readable/writable as described (`next` need not be).
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pass<K: Kernel, const R: usize>(
    nb: usize,
    x: *const u8,
    next: *const u8,
    a: *const f32,
    lda: usize,
    s: *const f32,
    s_stride: usize,
    c: *mut f32,
    ldc: usize,
) {
    let mut acc = [_mm256_setzero_ps(); R];
    let mut accs = [0.0f32; R];
    let block = |b: usize, acc: &mut [__m256; R], accs: &mut [f32; R]| {
        for line in (0..K::BYTES).step_by(64) {
            // A prefetch never faults.
            _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(b * K::BYTES + line) as *const i8);
        }
        // SAFETY: block b < nb of the weight row, of the activation rows and of their
        // sums is readable (caller contract).
        unsafe {
            K::block::<R>(
                x.add(b * K::BYTES),
                a.add(b * K::SIZE),
                lda,
                s.add(b * K::SUMS),
                s_stride,
                acc,
                accs,
            )
        }
    };
    let mut b = 0;
    if R == 1 {
        // Two accumulators, so that consecutive blocks do not wait on each other.
        let mut acc1 = [_mm256_setzero_ps(); R];
        while b + 2 <= nb {
            block(b, &mut acc, &mut accs);
            block(b + 1, &mut acc1, &mut accs);
            b += 2;
        }
        acc[0] = _mm256_add_ps(acc[0], acc1[0]);
    }
    while b < nb {
        block(b, &mut acc, &mut accs);
        b += 1;
    }
    for r in 0..R {
        // SAFETY: c has R writable f32 at stride ldc.
        unsafe { *c.add(r * ldc) = hsum(acc[r]) + accs[r] };
    }
}

/// [`crate::gemm_nt_qf32`] for one kernel type: weight rows outer, activation rows in
/// groups of [`ROWS`] inner (the weight row stays in L1 between the groups).
///
/// # Safety
/// AVX2/FMA/F16C; contract of [`gemm`].
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_kernel<K: Kernel>(
    m: usize,
    n: usize,
    nb: usize,
    a: *const f32,
    lda: usize,
    sums: *const f32,
    s_stride: usize,
    wq: *const u8,
    w_stride: usize,
    c: *mut f32,
    ldc: usize,
) {
    for j in 0..n {
        let mut i = 0;
        while i < m {
            let r = ROWS.min(m - i);
            // SAFETY: weight row j, activation rows i..i + r and their sums, C's
            // elements (i.., j) (caller contract).
            unsafe {
                let x = wq.add(j * w_stride);
                // The next weight row while passing over the first activation rows (later
                // passes find it cached).
                let next = if i == 0 { x.wrapping_add(w_stride) } else { x };
                let (a, s, c) = (a.add(i * lda), sums.add(i * s_stride), c.add(i * ldc + j));
                match r {
                    4 => pass::<K, 4>(nb, x, next, a, lda, s, s_stride, c, ldc),
                    3 => pass::<K, 3>(nb, x, next, a, lda, s, s_stride, c, ldc),
                    2 => pass::<K, 2>(nb, x, next, a, lda, s, s_stride, c, ldc),
                    _ => pass::<K, 1>(nb, x, next, a, lda, s, s_stride, c, ldc),
                }
            }
            i += r;
        }
    }
}

/// AVX2 [`crate::gemm_nt_qf32`] with the activation sums precomputed (`k` already
/// checked).
///
/// # Safety
/// AVX2/FMA/F16C; contract of [`crate::gemm_nt_qf32`]; `sums` readable for `m` rows of
/// `s_stride` f32 (the [`super::sums_per_block`] of every block).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) unsafe fn gemm(
    w: QuantType,
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    sums: *const f32,
    s_stride: usize,
    wq: *const u8,
    w_stride: usize,
    c: *mut f32,
    ldc: usize,
) {
    let nb = k / w.block_size();
    macro_rules! run {
        ($k:ty) => {{
            // SAFETY: forwarded contract.
            unsafe { gemm_kernel::<$k>(m, n, nb, a, lda, sums, s_stride, wq, w_stride, c, ldc) }
        }};
    }
    match w {
        QuantType::Q4_0 => run!(Q4_0),
        QuantType::Q4_1 => run!(Q4_1),
        QuantType::Q5_0 => run!(Q5_0),
        QuantType::Q5_1 => run!(Q5_1),
        QuantType::Q8_0 => run!(Q8_0),
        QuantType::Q2_K => run!(Q2K),
        QuantType::Q3_K => run!(Q3K),
        QuantType::Q4_K => run!(Q4K),
        QuantType::Q5_K => run!(Q5K),
        QuantType::Q6_K => run!(Q6K),
        QuantType::Q8_K => run!(Q8K),
    }
}

/// Checks at compile time that the kernels' block geometry and activation sums are the
/// format's and the driver's.
const _: () = {
    use super::sums_per_block as sums;
    macro_rules! check {
        ($($k:ty => $w:expr),*) => {
            $(
                assert!(<$k>::BYTES == $w.block_bytes());
                assert!(<$k>::SIZE == $w.block_size());
                assert!(<$k>::SUMS == sums($w));
            )*
        };
    }
    check!(
        Q4_0 => QuantType::Q4_0,
        Q4_1 => QuantType::Q4_1,
        Q5_0 => QuantType::Q5_0,
        Q5_1 => QuantType::Q5_1,
        Q8_0 => QuantType::Q8_0,
        Q2K => QuantType::Q2_K,
        Q3K => QuantType::Q3_K,
        Q4K => QuantType::Q4_K,
        Q5K => QuantType::Q5_K,
        Q6K => QuantType::Q6_K,
        Q8K => QuantType::Q8_K
    );
};
