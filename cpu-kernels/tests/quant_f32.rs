//! Quantized weights × f32 activations (`gemm_nt_qf32`, `vec_dot_qf32`), for all eleven
//! GGUF types, against the f64 dot product over `kiln_ir`'s dequantized weights.

mod common;

use common::{dequant, random_row, Rng};
use kiln_cpu_kernels::{gemm_nt_qf32, portable, vec_dot_qf32, QuantType};

type GemmQf32 =
    unsafe fn(QuantType, usize, usize, usize, *const f32, usize, *const u8, usize, *mut f32, usize);

const KERNELS: [(GemmQf32, &str); 2] = [
    (gemm_nt_qf32, "dispatched"),
    (portable::gemm_nt_qf32, "portable"),
];

/// The tolerance of the tests: `|got - exact| <= REL * sum |w_e x_e|`.
const REL: f64 = 1e-5;

/// f64 dot product of the dequantized weight row with `x`, and the sum of the terms'
/// magnitudes.
fn reference(w: QuantType, wrow: &[u8], x: &[f32]) -> (f64, f64) {
    let wd = dequant(w, wrow);
    assert_eq!(wd.len(), x.len());
    let (mut exact, mut mag) = (0.0f64, 0.0f64);
    for (a, b) in wd.iter().zip(x) {
        let p = f64::from(*a) * f64::from(*b);
        exact += p;
        mag += p.abs();
    }
    (exact, mag)
}

/// Activation rows of several kinds: uniform, with a lone spike (which 8-bit activation
/// quantization handles badly), wide dynamic range, all zeros.
fn activation(rng: &mut Rng, k: usize, kind: usize) -> Vec<f32> {
    match kind % 4 {
        0 => rng.vec(k),
        1 => {
            let mut x = rng.vec(k);
            x[(rng.next_u64() as usize) % k] = 300.0;
            x
        }
        2 => (0..k)
            .map(|_| rng.uniform() * 2f32.powi((rng.next_u64() % 20) as i32 - 10))
            .collect(),
        _ => vec![0.0; k],
    }
}

/// Runs `gemm` on `n` weight rows and `m` activation rows (both padded past their
/// minimal size, to test the strides) and checks every element against the reference.
fn check_gemm(
    gemm: GemmQf32,
    what: &str,
    w: QuantType,
    m: usize,
    n: usize,
    blocks: usize,
    rng: &mut Rng,
) {
    let k = blocks * w.block_size();
    let w_bytes = w.bytes_for(k).unwrap();
    let w_stride = w_bytes + 5;
    let lda = k + 3;
    let ldc = n + 2;
    let mut wq = vec![0u8; n * w_stride];
    for j in 0..n {
        wq[j * w_stride..j * w_stride + w_bytes].copy_from_slice(&random_row(rng, w, k));
    }
    let mut a = vec![f32::NAN; m * lda];
    for i in 0..m {
        a[i * lda..i * lda + k].copy_from_slice(&activation(rng, k, i + j_kind(n)));
    }
    let mut c = vec![f32::NAN; m * ldc];
    // SAFETY: buffers sized for the strides above.
    unsafe {
        gemm(
            w,
            m,
            n,
            k,
            a.as_ptr(),
            lda,
            wq.as_ptr(),
            w_stride,
            c.as_mut_ptr(),
            ldc,
        )
    };
    for i in 0..m {
        let x = &a[i * lda..i * lda + k];
        for j in 0..n {
            let (exact, mag) = reference(w, &wq[j * w_stride..j * w_stride + w_bytes], x);
            let got = f64::from(c[i * ldc + j]);
            assert!(
                (got - exact).abs() <= REL * mag + 1e-30,
                "{what} {w} m={m} n={n} k={k}: C[{i}][{j}] = {got}, reference {exact} (mag {mag})"
            );
        }
        assert!(c[i * ldc + n].is_nan(), "{what} {w}: padding of C written");
    }
}

/// Varies the activation kinds between shapes.
fn j_kind(n: usize) -> usize {
    n % 3
}

#[test]
fn every_type_matches_the_dequantized_reference() {
    let mut rng = Rng::new(2024);
    for (gemm, what) in KERNELS {
        for w in QuantType::ALL {
            for blocks in [1, 3, 17] {
                for &(m, n) in &[(1, 1), (1, 7), (2, 3), (3, 5), (4, 4), (5, 2), (15, 3)] {
                    check_gemm(gemm, what, w, m, n, blocks, &mut rng);
                }
            }
        }
    }
}

#[test]
fn extreme_weight_quants() {
    // Constant quant bytes reach the ends of every type's quant range (0x00, 0xFF) and
    // mixed patterns (0x80, 0x7F); the scale fields stay random and finite.
    let mut rng = Rng::new(5);
    for w in QuantType::ALL {
        let k = 3 * w.block_size();
        for fill in [0x00u8, 0xFF, 0x80, 0x7F, 0x55] {
            let mut wrow = random_row(&mut rng, w, k);
            for b in wrow.chunks_exact_mut(w.block_bytes()) {
                let keep: Vec<(usize, u8)> =
                    scale_bytes(w).into_iter().map(|i| (i, b[i])).collect();
                b.fill(fill);
                for (i, v) in keep {
                    b[i] = v;
                }
            }
            for kind in 0..3 {
                let x = activation(&mut rng, k, kind);
                let (exact, mag) = reference(w, &wrow, &x);
                for (gemm, what) in KERNELS {
                    let mut c = [0.0f32];
                    // SAFETY: one row of each, k elements.
                    unsafe {
                        gemm(
                            w,
                            1,
                            1,
                            k,
                            x.as_ptr(),
                            k,
                            wrow.as_ptr(),
                            0,
                            c.as_mut_ptr(),
                            1,
                        )
                    };
                    let got = f64::from(c[0]);
                    assert!(
                        (got - exact).abs() <= REL * mag + 1e-30,
                        "{what} {w} fill {fill:#x}: {got} vs {exact} (mag {mag})"
                    );
                }
            }
        }
    }
}

/// Byte offsets of a block's scale fields (kept random when the quants are filled).
fn scale_bytes(w: QuantType) -> Vec<usize> {
    match w {
        QuantType::Q8_K => (0..4).collect(),
        _ => w
            .f16_scale_offsets()
            .iter()
            .flat_map(|&o| [o, o + 1])
            .collect(),
    }
}

#[test]
fn vec_dot_is_the_one_by_one_product() {
    let mut rng = Rng::new(11);
    for w in QuantType::ALL {
        let k = 2 * w.block_size();
        let wrow = random_row(&mut rng, w, k);
        let x = rng.vec(k);
        let mut c = [0.0f32];
        // SAFETY: one row of each, k elements.
        let d = unsafe {
            gemm_nt_qf32(
                w,
                1,
                1,
                k,
                x.as_ptr(),
                k,
                wrow.as_ptr(),
                0,
                c.as_mut_ptr(),
                1,
            );
            vec_dot_qf32(w, k, wrow.as_ptr(), x.as_ptr())
        };
        assert_eq!(d.to_bits(), c[0].to_bits(), "{w}");
    }
}

#[test]
fn dispatched_and_portable_agree_to_rounding() {
    let mut rng = Rng::new(77);
    for w in QuantType::ALL {
        let (m, n, k) = (6, 5, 4 * w.block_size());
        let wq: Vec<u8> = (0..n).flat_map(|_| random_row(&mut rng, w, k)).collect();
        let a = rng.vec(m * k);
        let wb = w.bytes_for(k).unwrap();
        let (mut c1, mut c2) = (vec![0.0f32; m * n], vec![0.0f32; m * n]);
        // SAFETY: m×k activations, n weight rows, m×n outputs.
        unsafe {
            gemm_nt_qf32(
                w,
                m,
                n,
                k,
                a.as_ptr(),
                k,
                wq.as_ptr(),
                wb,
                c1.as_mut_ptr(),
                n,
            );
            portable::gemm_nt_qf32(
                w,
                m,
                n,
                k,
                a.as_ptr(),
                k,
                wq.as_ptr(),
                wb,
                c2.as_mut_ptr(),
                n,
            );
        }
        for i in 0..m {
            for j in 0..n {
                let (_, mag) = reference(w, &wq[j * wb..(j + 1) * wb], &a[i * k..(i + 1) * k]);
                let (x, y) = (c1[i * n + j], c2[i * n + j]);
                assert!(
                    f64::from((x - y).abs()) <= 2.0 * REL * mag + 1e-30,
                    "{w}: {x} vs {y}"
                );
            }
        }
    }
}

#[test]
fn empty_reductions_and_shapes() {
    for (gemm, what) in KERNELS {
        for w in QuantType::ALL {
            // k = 0: every output is the empty sum.
            let mut c = [f32::NAN; 6];
            let a = [1.0f32; 4];
            let wq = [0u8; 4];
            // SAFETY: no element is read; C is 2×3.
            unsafe { gemm(w, 2, 3, 0, a.as_ptr(), 0, wq.as_ptr(), 0, c.as_mut_ptr(), 3) };
            assert_eq!(c, [0.0; 6], "{what} {w}");
            // m = 0 or n = 0: nothing is written.
            let mut c = [f32::NAN; 1];
            // SAFETY: nothing is read or written.
            unsafe {
                gemm(w, 0, 1, 0, a.as_ptr(), 0, wq.as_ptr(), 0, c.as_mut_ptr(), 1);
                gemm(w, 1, 0, 0, a.as_ptr(), 0, wq.as_ptr(), 0, c.as_mut_ptr(), 1);
            }
            assert!(c[0].is_nan(), "{what} {w}");
        }
    }
}

#[test]
#[should_panic(expected = "not a whole number")]
fn partial_block_panics() {
    let a = [0.0f32; 40];
    let wq = [0u8; 40];
    let mut c = [0.0f32];
    // SAFETY: panics before reading.
    unsafe {
        gemm_nt_qf32(
            QuantType::Q4_1,
            1,
            1,
            40,
            a.as_ptr(),
            40,
            wq.as_ptr(),
            0,
            c.as_mut_ptr(),
            1,
        )
    };
}

#[test]
fn symbol_is_listed_and_callable() {
    let syms = kiln_cpu_kernels::symbols();
    assert!(syms.iter().any(|s| s.0 == "kiln_gemm_nt_qf32"));
    let mut rng = Rng::new(3);
    let w = QuantType::Q4_1;
    let k = 64;
    let x = rng.vec(k);
    let wrow = random_row(&mut rng, w, k);
    let mut c = [0.0f32];
    // SAFETY: one row of each, k = 64 elements.
    unsafe {
        kiln_cpu_kernels::ffi::kiln_gemm_nt_qf32(
            w.gguf_type_id(),
            1,
            1,
            k,
            x.as_ptr(),
            k,
            wrow.as_ptr(),
            0,
            c.as_mut_ptr(),
            1,
        );
        assert_eq!(c[0], vec_dot_qf32(w, k, wrow.as_ptr(), x.as_ptr()));
    }
}
