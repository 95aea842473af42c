//! AVX2 + FMA f32 NT GEMM.
//!
//! Two kernels:
//!
//! * **Packed** (most shapes): BLIS-style blocking. For each `KC`-deep slice of `k` and
//!   `NC`-wide block of `n` (`k` up to 640 is not split), `B` is packed into 16-column panels (k-major: for each `p`,
//!   16 consecutive columns) with 8×8 register transposes, and each `MC`-tall block of `A`
//!   into 6-row panels (for each `p`, 6 consecutive rows). A 6×16 micro-kernel then keeps
//!   its `C` tile in twelve ymm accumulators and per `p` does two loads of `B`, six
//!   broadcasts of `A` and twelve FMAs. The `B` panel (`KC × 16`) stays in L1 while the
//!   micro-kernel walks the `A` block (in L2). Edge tiles are computed into a scratch tile
//!   from zero-padded panels and copied out.
//! * **Direct** (up to 40 rows of `A`): llamafile/tinyBLAS-style 4×3 tiles of dot
//!   products over unpacked rows, 8-wide FMA along `k` (masked loads for the tail) and one
//!   horizontal sum per output at the end; `B` is walked in blocks of 96 rows that stay in
//!   L2 while every row of `A` passes over them.

use std::arch::x86_64::*;
use std::cell::RefCell;

use crate::dot_f32::avx2::hsum;

/// Rows of a packed `A` panel (micro-tile height).
const MR: usize = 6;
/// Columns of a packed `B` panel (micro-tile width, two ymm).
const NR: usize = 16;
/// Largest `k` slice packed at once when `k` is split (a `KC × 16` panel of `B` is 16 KiB,
/// half of L1).
const KC: usize = 256;
/// Up to this `k`, it is not split: one pass over `C` (LLM hidden sizes like 576 fit) is
/// worth more than keeping the `B` panel entirely in L1 (measured on Zen 3).
const KC_WHOLE: usize = 640;
/// Largest block of `A` rows packed at once (a multiple of `MR`).
const MC: usize = 72;
/// Largest block of `B` columns packed at once (a multiple of `NR`).
const NC: usize = 1024;
/// Up to this many rows of `A`, the unpacked direct kernel is used (measured on Zen 3: it
/// beats packing below about 48 rows, where packing `B` is not amortized).
const DIRECT_MAX_M: usize = 40;
/// Rows of `B` the direct kernel keeps hot (in L2) while it walks every row of `A`.
const DIRECT_NB: usize = 96;

/// `C = A · Bᵀ` with AVX2 + FMA; see [`crate::gemm_nt_f32`].
///
/// # Safety
/// AVX2 and FMA must be available; pointer contract of [`crate::gemm_nt_f32`].
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn gemm_nt(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
) {
    if k == 0 {
        for i in 0..m {
            // SAFETY: row `i` of C has `n` writable elements (caller contract).
            unsafe { std::ptr::write_bytes(c.add(i * ldc), 0, n) };
        }
        return;
    }
    // SAFETY (both calls): forwarded caller contract; features checked by the caller.
    unsafe {
        if m <= DIRECT_MAX_M {
            gemm_direct(m, n, k, a, lda, b, ldb, c, ldc);
        } else {
            gemm_packed(m, n, k, a, lda, b, ldb, BLayout::Nt, c, ldc);
        }
    }
}

/// Splits `len` into the fewest pieces of at most `max`, each as equal as possible and a
/// multiple of `align` (except that the last takes what is left): returns the piece size.
fn even_block(len: usize, max: usize, align: usize) -> usize {
    let pieces = len.div_ceil(max);
    let size = len.div_ceil(pieces);
    size.div_ceil(align) * align
}

/// A growable f32 scratch buffer whose start is 64-byte aligned.
struct Scratch {
    buf: Vec<f32>,
}

impl Scratch {
    const fn new() -> Scratch {
        Scratch { buf: Vec::new() }
    }

    /// A 64-byte-aligned pointer to at least `len` f32 (contents unspecified).
    fn get(&mut self, len: usize) -> *mut f32 {
        if self.buf.len() < len + 16 {
            self.buf = vec![0.0; len + 16];
        }
        let p = self.buf.as_mut_ptr();
        let off = p.align_offset(64);
        // SAFETY: `off < 16` (f32 alignment is 4, so at most 15 elements to reach 64
        // bytes) and the buffer holds `len + 16` elements.
        unsafe { p.add(off) }
    }
}

thread_local! {
    /// Per-thread packing buffers (packed `A` block, packed `B` block), reused across calls.
    static PACK: RefCell<(Scratch, Scratch)> = const { RefCell::new((Scratch::new(), Scratch::new())) };
}

/// How the right operand lies in memory.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum BLayout {
    /// `n × k` row-major (contiguous along `k`): `C = A · Bᵀ`.
    Nt,
    /// `k × n` row-major (contiguous along `n`): `C = A · B`.
    Nn,
}

/// The packed path (see the module docs) for either layout of `B`: for
/// [`BLayout::Nn`] (`C = A · B`, `B` row-major `k × n` at stride `ldb`), packing `B` into
/// 16-column panels is a copy of 16 contiguous floats per step of `k`, cheaper than the
/// transposing pack of the NT layout.
///
/// # Safety
/// AVX2 + FMA; `m`, `n` and `k` positive; the pointer contract of [`crate::gemm_nt_f32`]
/// (for [`BLayout::Nn`], of [`crate::gemm_nn_f32`]).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn gemm_packed(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    layout: BLayout,
    c: *mut f32,
    ldc: usize,
) {
    let kc_max = if k <= KC_WHOLE {
        k.div_ceil(8) * 8
    } else {
        even_block(k, KC, 8)
    };
    let mc_max = even_block(m, MC, MR);
    let nc_max = even_block(n, NC, NR);
    PACK.with(|bufs| {
        let mut bufs = bufs.borrow_mut();
        let (abuf, bbuf) = &mut *bufs;
        let pa = abuf.get(mc_max * kc_max);
        let pb = bbuf.get(nc_max * kc_max);
        let mut jc = 0;
        while jc < n {
            let nc = nc_max.min(n - jc);
            let mut pc = 0;
            while pc < k {
                let kc = kc_max.min(k - pc);
                // SAFETY: the B block (columns jc..jc+nc of C, k slice pc..pc+kc) is
                // readable; `pb` holds nc_max.div_ceil(NR) * NR * kc_max >= the packed
                // size (nc_max is a multiple of NR).
                unsafe {
                    match layout {
                        BLayout::Nt => pack_b(nc, kc, b.add(jc * ldb + pc), ldb, pb),
                        BLayout::Nn => pack_b_nn(nc, kc, b.add(pc * ldb + jc), ldb, pb),
                    }
                };
                let mut ic = 0;
                while ic < m {
                    let mc = mc_max.min(m - ic);
                    // SAFETY: as above for the A block; mc_max is a multiple of MR.
                    unsafe { pack_a(mc, kc, a.add(ic * lda + pc), lda, pa) };
                    let mut jr = 0;
                    while jr < nc {
                        let nr = NR.min(nc - jr);
                        let mut ir = 0;
                        while ir < mc {
                            let mr = MR.min(mc - ir);
                            // SAFETY: the panels lie inside the packed blocks; the C
                            // tile (rows ic+ir.., columns jc+jr..) is inside C.
                            unsafe {
                                let cp = c.add((ic + ir) * ldc + jc + jr);
                                let ap = pa.add(ir * kc);
                                let bp = pb.add(jr * kc);
                                if mr == MR && nr == NR {
                                    kernel_6x16(kc, ap, bp, cp, ldc, pc > 0);
                                } else {
                                    kernel_edge(kc, ap, bp, cp, ldc, pc > 0, mr, nr);
                                }
                            }
                            ir += MR;
                        }
                        jr += NR;
                    }
                    ic += mc;
                }
                pc += kc;
            }
            jc += nc;
        }
    });
}

/// Packs `nc` rows of `B` (k-contiguous, stride `ldb`), `kc` deep, into 16-column
/// k-major panels at `out` (panel `q` at `out + q * kc * 16`), zero-padding the last.
///
/// # Safety
/// AVX2; the block must be readable and `out` writable for `nc.div_ceil(16) * 16 * kc` f32.
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_b(nc: usize, kc: usize, b: *const f32, ldb: usize, out: *mut f32) {
    let mut j0 = 0;
    while j0 < nc {
        let rows = NR.min(nc - j0);
        // SAFETY: panel j0 / 16 lies within `out` (caller contract).
        let dst = unsafe { out.add(j0 * kc) };
        if rows == NR {
            for half in 0..2 {
                // SAFETY: rows j0 + 8 * half .. + 8 are within the block.
                let src = unsafe { b.add((j0 + 8 * half) * ldb) };
                let mut p = 0;
                while p + 8 <= kc {
                    // SAFETY: 8 rows × 8 columns at p of the block are readable; the
                    // destinations (p + t) * 16 + 8 * half are inside the panel.
                    unsafe {
                        let r: [__m256; 8] = [
                            _mm256_loadu_ps(src.add(p)),
                            _mm256_loadu_ps(src.add(ldb + p)),
                            _mm256_loadu_ps(src.add(2 * ldb + p)),
                            _mm256_loadu_ps(src.add(3 * ldb + p)),
                            _mm256_loadu_ps(src.add(4 * ldb + p)),
                            _mm256_loadu_ps(src.add(5 * ldb + p)),
                            _mm256_loadu_ps(src.add(6 * ldb + p)),
                            _mm256_loadu_ps(src.add(7 * ldb + p)),
                        ];
                        let t = transpose8(r);
                        for (q, v) in t.iter().enumerate() {
                            _mm256_store_ps(dst.add((p + q) * NR + 8 * half), *v);
                        }
                    }
                    p += 8;
                }
                while p < kc {
                    for r in 0..8 {
                        // SAFETY: element (r, p) of the half-panel's rows is readable and
                        // its destination inside the panel.
                        unsafe { *dst.add(p * NR + 8 * half + r) = *src.add(r * ldb + p) };
                    }
                    p += 1;
                }
            }
        } else {
            for p in 0..kc {
                for r in 0..NR {
                    // SAFETY: rows below `rows` are inside the block; the panel has
                    // kc * 16 slots.
                    unsafe {
                        *dst.add(p * NR + r) = if r < rows {
                            *b.add((j0 + r) * ldb + p)
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
        j0 += NR;
    }
}

/// Packs `nc` columns of a row-major `B` (`kc` rows at stride `ldb`) into 16-column k-major
/// panels at `out`, as [`pack_b`] lays them out (zero-padding the last).
///
/// # Safety
/// AVX2; rows `p < kc` of the block must be readable for `nc` f32 and `out` writable for
/// `nc.div_ceil(16) * 16 * kc` f32 (32-byte aligned).
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_b_nn(nc: usize, kc: usize, b: *const f32, ldb: usize, out: *mut f32) {
    let mut j0 = 0;
    while j0 < nc {
        let cols = NR.min(nc - j0);
        // SAFETY: panel j0 / 16 lies within `out` (caller contract).
        let dst = unsafe { out.add(j0 * kc) };
        for p in 0..kc {
            // SAFETY: row p of the block has `nc` readable elements from column 0; the
            // panel row p (16 slots) lies inside the panel and is 32-byte aligned.
            unsafe {
                let src = b.add(p * ldb + j0);
                let d = dst.add(p * NR);
                if cols == NR {
                    _mm256_store_ps(d, _mm256_loadu_ps(src));
                    _mm256_store_ps(d.add(8), _mm256_loadu_ps(src.add(8)));
                } else {
                    for r in 0..NR {
                        *d.add(r) = if r < cols { *src.add(r) } else { 0.0 };
                    }
                }
            }
        }
        j0 += NR;
    }
}

/// Transposes an 8×8 block held as eight row vectors into eight column vectors.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ]
}

/// Packs `mc` rows of `A` (k-contiguous, stride `lda`), `kc` deep, into 6-row k-major
/// panels at `out` (panel `q` at `out + q * kc * 6`), zero-padding the last.
///
/// # Safety
/// The block must be readable and `out` writable for `mc.div_ceil(6) * 6 * kc` f32.
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_a(mc: usize, kc: usize, a: *const f32, lda: usize, out: *mut f32) {
    let mut i0 = 0;
    while i0 < mc {
        let rows = MR.min(mc - i0);
        // SAFETY: panel i0 / 6 lies within `out` (caller contract).
        let dst = unsafe { out.add(i0 * kc) };
        if rows == MR {
            // Six read streams, one contiguous write stream (the panel in `p`, `r` order):
            // 8 steps of `p` at a time through an 8×8 register transpose (two zero rows),
            // each column stored as 8 lanes whose last two the next store overwrites; the
            // last column of a group is stored as 4 + 2 lanes, so nothing is written past
            // the panel.
            // SAFETY: rows i0..i0 + 6 of the block have kc readable elements each.
            let src: [*const f32; MR] = std::array::from_fn(|r| unsafe { a.add((i0 + r) * lda) });
            let mut p0 = 0;
            while p0 + 8 <= kc {
                // SAFETY: columns p0..p0 + 8 of the six rows are readable; the stores
                // cover panel slots p0 * 6 .. (p0 + 8) * 6, inside the panel.
                unsafe {
                    let z = _mm256_setzero_ps();
                    let t = transpose8([
                        _mm256_loadu_ps(src[0].add(p0)),
                        _mm256_loadu_ps(src[1].add(p0)),
                        _mm256_loadu_ps(src[2].add(p0)),
                        _mm256_loadu_ps(src[3].add(p0)),
                        _mm256_loadu_ps(src[4].add(p0)),
                        _mm256_loadu_ps(src[5].add(p0)),
                        z,
                        z,
                    ]);
                    let d = dst.add(p0 * MR);
                    for (q, v) in t.iter().enumerate().take(7) {
                        _mm256_storeu_ps(d.add(q * MR), *v);
                    }
                    let last = d.add(7 * MR);
                    _mm_storeu_ps(last, _mm256_castps256_ps128(t[7]));
                    _mm_storel_epi64(
                        last.add(4).cast(),
                        _mm_castps_si128(_mm256_extractf128_ps::<1>(t[7])),
                    );
                }
                p0 += 8;
            }
            for p in p0..kc {
                for (r, s) in src.iter().enumerate() {
                    // SAFETY: p < kc; destination inside the panel.
                    unsafe { *dst.add(p * MR + r) = *s.add(p) };
                }
            }
        } else {
            for r in 0..MR {
                if r < rows {
                    // SAFETY: row i0 + r of the block has kc readable elements.
                    let src = unsafe { a.add((i0 + r) * lda) };
                    for p in 0..kc {
                        // SAFETY: p < kc; destination inside the panel.
                        unsafe { *dst.add(p * MR + r) = *src.add(p) };
                    }
                } else {
                    for p in 0..kc {
                        // SAFETY: destination inside the panel.
                        unsafe { *dst.add(p * MR + r) = 0.0 };
                    }
                }
            }
        }
        i0 += MR;
    }
}

/// The 6×16 micro-kernel: `C[0..6][0..16] (+)= Ã_panel · B̃_panel` over `kc` steps.
///
/// # Safety
/// AVX2 + FMA; `pa` readable for `6 * kc`, `pb` readable (32-byte aligned) for `16 * kc`
/// f32, `c` a 6×16 tile at stride `ldc` (readable when `accumulate`) and writable.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_6x16(
    kc: usize,
    pa: *const f32,
    pb: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let mut c00 = _mm256_setzero_ps();
    let mut c01 = _mm256_setzero_ps();
    let mut c10 = _mm256_setzero_ps();
    let mut c11 = _mm256_setzero_ps();
    let mut c20 = _mm256_setzero_ps();
    let mut c21 = _mm256_setzero_ps();
    let mut c30 = _mm256_setzero_ps();
    let mut c31 = _mm256_setzero_ps();
    let mut c40 = _mm256_setzero_ps();
    let mut c41 = _mm256_setzero_ps();
    let mut c50 = _mm256_setzero_ps();
    let mut c51 = _mm256_setzero_ps();
    for r in 0..MR {
        // SAFETY: prefetches never fault; the addresses are the tile's rows.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(c.add(r * ldc) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(c.add(r * ldc + NR - 1) as *const i8);
        }
    }
    let mut pa = pa;
    let mut pb = pb;
    for _ in 0..kc {
        // SAFETY: each step reads 16 f32 of the B panel and 6 of the A panel, `kc` steps
        // in all, within the panels (caller contract); pb stays 32-byte aligned.
        unsafe {
            let b0 = _mm256_load_ps(pb);
            let b1 = _mm256_load_ps(pb.add(8));
            let a0 = _mm256_broadcast_ss(&*pa);
            c00 = _mm256_fmadd_ps(a0, b0, c00);
            c01 = _mm256_fmadd_ps(a0, b1, c01);
            let a1 = _mm256_broadcast_ss(&*pa.add(1));
            c10 = _mm256_fmadd_ps(a1, b0, c10);
            c11 = _mm256_fmadd_ps(a1, b1, c11);
            let a2 = _mm256_broadcast_ss(&*pa.add(2));
            c20 = _mm256_fmadd_ps(a2, b0, c20);
            c21 = _mm256_fmadd_ps(a2, b1, c21);
            let a3 = _mm256_broadcast_ss(&*pa.add(3));
            c30 = _mm256_fmadd_ps(a3, b0, c30);
            c31 = _mm256_fmadd_ps(a3, b1, c31);
            let a4 = _mm256_broadcast_ss(&*pa.add(4));
            c40 = _mm256_fmadd_ps(a4, b0, c40);
            c41 = _mm256_fmadd_ps(a4, b1, c41);
            let a5 = _mm256_broadcast_ss(&*pa.add(5));
            c50 = _mm256_fmadd_ps(a5, b0, c50);
            c51 = _mm256_fmadd_ps(a5, b1, c51);
            pa = pa.add(MR);
            pb = pb.add(NR);
        }
    }
    let rows = [
        (c00, c01),
        (c10, c11),
        (c20, c21),
        (c30, c31),
        (c40, c41),
        (c50, c51),
    ];
    for (r, (lo, hi)) in rows.into_iter().enumerate() {
        // SAFETY: row r of the tile is inside C (caller contract).
        unsafe {
            let cr = c.add(r * ldc);
            if accumulate {
                _mm256_storeu_ps(cr, _mm256_add_ps(_mm256_loadu_ps(cr), lo));
                _mm256_storeu_ps(cr.add(8), _mm256_add_ps(_mm256_loadu_ps(cr.add(8)), hi));
            } else {
                _mm256_storeu_ps(cr, lo);
                _mm256_storeu_ps(cr.add(8), hi);
            }
        }
    }
}

/// An edge tile of `mr ≤ 6` rows and `nr ≤ 16` columns: the full micro-kernel into a
/// scratch tile (the panels are zero-padded), then the valid part copied out.
///
/// # Safety
/// As [`kernel_6x16`], with only the `mr × nr` part of the `C` tile accessed.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_edge(
    kc: usize,
    pa: *const f32,
    pb: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    mr: usize,
    nr: usize,
) {
    let mut tile = [0.0f32; MR * NR];
    // SAFETY: the scratch tile is a writable 6×16 tile at stride 16; panels per contract.
    unsafe { kernel_6x16(kc, pa, pb, tile.as_mut_ptr(), NR, false) };
    for r in 0..mr {
        for j in 0..nr {
            // SAFETY: (r, j) with r < mr, j < nr is inside C's tile.
            unsafe {
                let d = c.add(r * ldc + j);
                *d = if accumulate {
                    *d + tile[r * NR + j]
                } else {
                    tile[r * NR + j]
                };
            }
        }
    }
}

/// The direct path: `RM × RN` tiles of dot products over unpacked rows.
///
/// # Safety
/// AVX2 + FMA; contract of [`crate::gemm_nt_f32`] with `k > 0`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn gemm_direct(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
) {
    const RM: usize = 4;
    const RN: usize = 3;
    let mut jb = 0;
    while jb < n {
        let jb_end = n.min(jb + DIRECT_NB);
        let mut i = 0;
        while i < m {
            let rm = RM.min(m - i);
            let mut j = jb;
            while j < jb_end {
                let rn = RN.min(jb_end - j);
                // SAFETY: rows i..i+rm of A, j..j+rn of B and the C tile are inside the
                // operands (caller contract).
                unsafe {
                    let (ap, bp, cp) = (a.add(i * lda), b.add(j * ldb), c.add(i * ldc + j));
                    match (rm, rn) {
                        (4, 3) => tile::<4, 3>(k, ap, lda, bp, ldb, cp, ldc),
                        (4, 2) => tile::<4, 2>(k, ap, lda, bp, ldb, cp, ldc),
                        (4, 1) => tile::<4, 1>(k, ap, lda, bp, ldb, cp, ldc),
                        (3, 3) => tile::<3, 3>(k, ap, lda, bp, ldb, cp, ldc),
                        (3, 2) => tile::<3, 2>(k, ap, lda, bp, ldb, cp, ldc),
                        (3, 1) => tile::<3, 1>(k, ap, lda, bp, ldb, cp, ldc),
                        (2, 3) => tile::<2, 3>(k, ap, lda, bp, ldb, cp, ldc),
                        (2, 2) => tile::<2, 2>(k, ap, lda, bp, ldb, cp, ldc),
                        (2, 1) => tile::<2, 1>(k, ap, lda, bp, ldb, cp, ldc),
                        (1, 3) => tile::<1, 3>(k, ap, lda, bp, ldb, cp, ldc),
                        (1, 2) => tile::<1, 2>(k, ap, lda, bp, ldb, cp, ldc),
                        _ => tile::<1, 1>(k, ap, lda, bp, ldb, cp, ldc),
                    }
                }
                j += rn;
            }
            i += rm;
        }
        jb = jb_end;
    }
}

/// Lane mask selecting the first `r` (0..8) lanes, for masked loads.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn tail_mask(r: usize) -> __m256i {
    let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_cmpgt_epi32(_mm256_set1_epi32(r as i32), idx)
}

/// One `RM × RN` tile of dot products over the full `k`.
///
/// # Safety
/// AVX2 + FMA; `RM` rows of `A` and `RN` rows of `B`, `k` long, readable; the `RM × RN`
/// tile of `C` writable.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const RM: usize, const RN: usize>(
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); RN]; RM];
    let mut p = 0;
    while p + 8 <= k {
        let mut bv = [_mm256_setzero_ps(); RN];
        for (j, v) in bv.iter_mut().enumerate() {
            // SAFETY: p + 8 <= k inside row j of B.
            *v = unsafe { _mm256_loadu_ps(b.add(j * ldb + p)) };
        }
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: p + 8 <= k inside row i of A.
            let av = unsafe { _mm256_loadu_ps(a.add(i * lda + p)) };
            for (j, acc) in row.iter_mut().enumerate() {
                *acc = _mm256_fmadd_ps(av, bv[j], *acc);
            }
        }
        p += 8;
    }
    if p < k {
        let mask = tail_mask(k - p);
        let mut bv = [_mm256_setzero_ps(); RN];
        for (j, v) in bv.iter_mut().enumerate() {
            // SAFETY: the masked load touches only lanes p..k of row j of B.
            *v = unsafe { _mm256_maskload_ps(b.add(j * ldb + p), mask) };
        }
        for (i, row) in acc.iter_mut().enumerate() {
            // SAFETY: the masked load touches only lanes p..k of row i of A.
            let av = unsafe { _mm256_maskload_ps(a.add(i * lda + p), mask) };
            for (j, acc) in row.iter_mut().enumerate() {
                *acc = _mm256_fmadd_ps(av, bv[j], *acc);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            // SAFETY: (i, j) inside the C tile.
            unsafe { *c.add(i * ldc + j) = hsum(*v) };
        }
    }
}
