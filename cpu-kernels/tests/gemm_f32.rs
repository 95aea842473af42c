//! `gemm_nt_f32`, `gemm_nn_f32` and `dot_f32` against a naive f64 reference, on odd shapes
//! and strides.

mod common;

use common::Rng;
use kiln_cpu_kernels::{dot_f32, gemm_nn_f32, gemm_nt_f32, portable};

type Gemm = unsafe fn(usize, usize, usize, *const f32, usize, *const f32, usize, *mut f32, usize);

const SIZES: [usize; 16] = [1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 65, 100, 257];

/// How `B` is laid out: `[n, k]` rows (`C = A · Bᵀ`, `gemm_nt_f32`) or `[k, n]` rows
/// (`C = A · B`, `gemm_nn_f32`).
#[derive(Clone, Copy)]
enum BLayout {
    Nt,
    Nn,
}

/// Runs `gemm` on one random problem and checks every output (and that the padding of `C`
/// is untouched).
fn check(gemm: Gemm, rng: &mut Rng, m: usize, n: usize, k: usize, pad: bool) {
    let strides = if pad {
        (k + 3, k + 5, n + 7)
    } else {
        (k, k, n)
    };
    check_strided(gemm, BLayout::Nt, rng, (m, n, k), strides);
}

/// [`check`] with explicit strides `(lda, ldb, ldc)` and `B`'s layout. The error bound is
/// `1e-5` of the sum of `|terms|` for `Nt`, `k` f32 epsilons of it for `Nn`.
fn check_strided(
    gemm: Gemm,
    layout: BLayout,
    rng: &mut Rng,
    (m, n, k): (usize, usize, usize),
    (lda, ldb, ldc): (usize, usize, usize),
) {
    let a = rng.vec(m * lda);
    let b = rng.vec(match layout {
        BLayout::Nt => n * ldb,
        BLayout::Nn => k.max(1) * ldb,
    });
    let sentinel = 12345.0f32;
    let mut c = vec![sentinel; m * ldc];
    // SAFETY: the buffers have the shapes the strides describe.
    unsafe {
        gemm(
            m,
            n,
            k,
            a.as_ptr(),
            lda,
            b.as_ptr(),
            ldb,
            c.as_mut_ptr(),
            ldc,
        )
    };
    for i in 0..m {
        for j in 0..ldc {
            let got = c[i * ldc + j];
            if j >= n {
                assert_eq!(got, sentinel, "padding of C written at ({i}, {j})");
                continue;
            }
            let (mut exact, mut mag) = (0.0f64, 0.0f64);
            for p in 0..k {
                let bv = match layout {
                    BLayout::Nt => b[j * ldb + p],
                    BLayout::Nn => b[p * ldb + j],
                };
                let prod = f64::from(a[i * lda + p]) * f64::from(bv);
                exact += prod;
                mag += prod.abs();
            }
            let err = (f64::from(got) - exact).abs();
            let bound = match layout {
                BLayout::Nt => 1e-5 * mag + 1e-30,
                BLayout::Nn => k as f64 * f64::from(f32::EPSILON) * mag,
            };
            assert!(
                err <= bound,
                "m={m} n={n} k={k} strides=({lda}, {ldb}, {ldc}): C[{i}][{j}] = {got}, expected {exact} (err {err}, mag {mag})"
            );
        }
    }
}

fn sweep(gemm: Gemm, ks: &[usize]) {
    let mut rng = Rng::new(7);
    for &m in &SIZES {
        for &n in &SIZES {
            for (t, &k) in ks.iter().enumerate() {
                check(gemm, &mut rng, m, n, k, (m + n + t) % 2 == 1);
            }
        }
    }
}

#[test]
fn dispatched_gemm_matches_reference_on_odd_shapes() {
    sweep(gemm_nt_f32, &[1, 7, 8, 16, 33, 100]);
}

#[test]
fn portable_gemm_matches_reference_on_odd_shapes() {
    sweep(portable::gemm_nt_f32, &[1, 9, 33]);
}

#[test]
fn gemm_crosses_cache_blocks() {
    // k beyond one KC slice, m beyond one MC block, n beyond one 16-column panel set.
    let mut rng = Rng::new(11);
    for &(m, n, k) in &[
        (257, 33, 700),
        (150, 65, 641),
        (13, 300, 1025),
        (6, 16, 2048),
        (145, 17, 321),
        (4, 100, 1000),
    ] {
        check(gemm_nt_f32, &mut rng, m, n, k, true);
        check(gemm_nt_f32, &mut rng, m, n, k, false);
    }
    check(portable::gemm_nt_f32, &mut rng, 31, 17, 700, true);
}

#[test]
fn gemm_with_k_zero_writes_zeros() {
    for gemm in [gemm_nt_f32 as Gemm, portable::gemm_nt_f32] {
        for m in [1, 3, 7] {
            let mut c = vec![1.0f32; m * 5];
            // SAFETY: k = 0 reads nothing; C is m × 5.
            unsafe { gemm(m, 5, 0, [].as_ptr(), 0, [].as_ptr(), 0, c.as_mut_ptr(), 5) };
            assert!(c.iter().all(|&v| v == 0.0));
        }
    }
}

#[test]
fn dot_matches_reference() {
    let mut rng = Rng::new(3);
    for n in (0..70).chain([100, 255, 256, 257, 1000, 4097]) {
        let a = rng.vec(n);
        let b = rng.vec(n);
        let exact: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        let mag: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (f64::from(*x) * f64::from(*y)).abs())
            .sum();
        for dot in [
            dot_f32 as unsafe fn(usize, *const f32, *const f32) -> f32,
            portable::dot_f32,
        ] {
            // SAFETY: both vectors hold n values.
            let got = unsafe { dot(n, a.as_ptr(), b.as_ptr()) };
            assert!(
                (f64::from(got) - exact).abs() <= 1e-5 * mag + 1e-30,
                "n={n}: {got} vs {exact}"
            );
        }
    }
}

/// `gemm_nn_f32` (B row-major `[k, n]`, read in place) against a plain f64 product, for
/// every column-block size and tail of the few-row path (64, 32, 16, 8 columns and fewer),
/// the packed path from 16 rows (edge panels of rows and columns, `k` split into slices
/// above 640), strides larger than the extents, and `k == 0`; the padding of `C` stays
/// untouched.
#[test]
fn gemm_nn_matches_reference() {
    let mut rng = Rng::new(1);
    for (m, n, k) in [
        (1, 64, 17),
        (3, 127, 5),
        (2, 7, 300),
        (1, 200, 1),
        (4, 40, 0),
        (15, 64, 33),
        (16, 64, 512),
        (97, 64, 513),
        (50, 23, 7),
        (31, 130, 1000),
        (20, 16, 0),
    ] {
        let strides = (k + 3, n + 5, n + 2);
        check_strided(gemm_nn_f32, BLayout::Nn, &mut rng, (m, n, k), strides);
    }
}
