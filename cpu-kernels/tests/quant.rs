//! Activation quantization and the quantized dot products, for all eleven GGUF types.

mod common;

use common::{dequant, random_row, Rng};
use kiln_cpu_kernels::{
    activation_type, gemm_nt_q, portable, quantize_activations, vec_dot_q, QuantType,
};

type VecDot = unsafe fn(QuantType, usize, *const u8, *const u8) -> f32;

/// ggml's `nearest_int`: round to nearest, ties to even, by the float magic-number trick.
fn nearest_int(v: f32) -> i32 {
    assert!(v.abs() <= 4_194_303.0);
    let bits = (v + 12_582_912.0).to_bits() as i32;
    (bits & 0x007F_FFFF) - 0x0040_0000
}

/// ggml's `quantize_row_q8_0_ref`, transcribed.
fn ref_q8_0(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for xb in x.chunks(32) {
        let mut amax = 0.0f32;
        for &v in xb {
            amax = if amax > v.abs() { amax } else { v.abs() };
        }
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
        for &v in xb {
            // C's roundf (half away from zero) is Rust's f32::round.
            let q = (v * id).round();
            out.push(q as i8 as u8);
        }
    }
    out
}

/// ggml's `quantize_row_q8_K_ref`, transcribed.
fn ref_q8_k(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for xb in x.chunks(256) {
        let (mut max, mut amax) = (0.0f32, 0.0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            out.extend_from_slice(&[0u8; 292]);
            continue;
        }
        let iscale = -127.0 / max;
        let qs: Vec<i8> = xb
            .iter()
            .map(|&v| nearest_int(iscale * v).min(127) as i8)
            .collect();
        out.extend_from_slice(&(1.0 / iscale).to_le_bytes());
        out.extend(qs.iter().map(|&q| q as u8));
        for s in qs.chunks(16) {
            let sum: i32 = s.iter().map(|&q| i32::from(q)).sum();
            out.extend_from_slice(&(sum as i16).to_le_bytes());
        }
    }
    out
}

fn quantize(w: QuantType, x: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; activation_type(w).bytes_for(x.len()).unwrap()];
    quantize_activations(w, x, &mut out);
    out
}

/// Activation rows that exercise the corner cases: ties, zero blocks, a lone extreme.
fn activation_cases(rng: &mut Rng, k: usize) -> Vec<Vec<f32>> {
    let mut cases = vec![rng.vec(k), vec![0.0; k]];
    // Multiples of amax/254 land on rounding ties.
    cases.push((0..k).map(|i| (i % 255) as f32 - 127.0).collect());
    cases.push(
        (0..k)
            .map(|i| ((i * 7) % 255) as f32 * 0.5 - 63.5)
            .collect(),
    );
    let mut spike = rng.vec(k);
    spike[k / 3] = 100.0;
    cases.push(spike);
    let mut neg = rng.vec(k);
    neg[k - 1] = -50.0;
    cases.push(neg);
    cases
}

#[test]
fn avx2_path_is_used_where_available() {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
        && std::env::var("KILN_CPU_KERNELS").is_err()
    {
        assert_eq!(
            kiln_cpu_kernels::dispatch::isa(),
            kiln_cpu_kernels::dispatch::Isa::Avx2Fma
        );
    }
}

#[test]
fn activation_types_follow_ggml() {
    for w in QuantType::ALL {
        let expect = if w.block_size() == 32 {
            QuantType::Q8_0
        } else {
            QuantType::Q8_K
        };
        assert_eq!(activation_type(w), expect, "{w}");
    }
}

#[test]
fn quantize_activations_matches_ggml_reference() {
    let mut rng = Rng::new(1);
    for k in [256, 512, 1536] {
        for x in activation_cases(&mut rng, k) {
            assert_eq!(quantize(QuantType::Q4_0, &x), ref_q8_0(&x), "q8_0 k={k}");
            assert_eq!(quantize(QuantType::Q4_K, &x), ref_q8_k(&x), "q8_k k={k}");
        }
    }
    // Half-way cases round away from zero for Q8_0 (roundf) and to even for Q8_K.
    let mut x = vec![0.0f32; 256];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = -2.5;
    x[3] = 3.5;
    let q = quantize(QuantType::Q8_0, &x);
    assert_eq!(&q[2..6], &[127, 3, (-3i8) as u8, 4]);
    let q = quantize(QuantType::Q6_K, &x);
    // iscale = -1: quants are -x rounded to even.
    assert_eq!(&q[4..8], &[(-127i8) as u8, (-2i8) as u8, 2, (-4i8) as u8]);
}

/// Checks one dot product against the f64 dot of the dequantized operands (tight) and
/// against the f32 activations (within the activation quantization error).
fn check_dot(dot: VecDot, w: QuantType, k: usize, wrow: &[u8], x: &[f32], what: &str) {
    let act = quantize(w, x);
    // SAFETY: both rows hold k elements of their types.
    let got = f64::from(unsafe { dot(w, k, wrow.as_ptr(), act.as_ptr()) });
    let wd = dequant(w, wrow);
    let ad = dequant(activation_type(w), &act);
    let (mut exact, mut mag) = (0.0f64, 0.0f64);
    for (a, b) in wd.iter().zip(&ad) {
        let p = f64::from(*a) * f64::from(*b);
        exact += p;
        mag += p.abs();
    }
    assert!(
        (got - exact).abs() <= 1e-4 * mag + 1e-12,
        "{what} {w} k={k}: {got} vs dequantized {exact} (mag {mag})"
    );
    // Against the unquantized activations: each activation is off by at most about half
    // its block's step (plus the f16 rounding of Q8_0's scale).
    let bs = activation_type(w).block_size();
    let bb = activation_type(w).block_bytes();
    let (mut orig, mut bound) = (0.0f64, 0.0f64);
    for (e, (a, b)) in wd.iter().zip(x).enumerate() {
        orig += f64::from(*a) * f64::from(*b);
        let blk = &act[(e / bs) * bb..];
        let step = if bs == 32 {
            f64::from(half::f16::from_bits(u16::from_le_bytes([blk[0], blk[1]])).to_f32())
        } else {
            f64::from(f32::from_le_bytes([blk[0], blk[1], blk[2], blk[3]]))
        };
        bound += f64::from(a.abs()) * 0.6 * step.abs();
    }
    assert!(
        (got - orig).abs() <= bound + 1e-4 * mag + 1e-12,
        "{what} {w} k={k}: {got} vs f32 activations {orig} (bound {bound})"
    );
}

fn all_types(dot: VecDot, what: &str) {
    let mut rng = Rng::new(42);
    for w in QuantType::ALL {
        for blocks in [1, 2, 3, 6] {
            let k = blocks * w.block_size();
            for _ in 0..4 {
                let wrow = random_row(&mut rng, w, k);
                for x in activation_cases(&mut rng, k) {
                    check_dot(dot, w, k, &wrow, &x, what);
                }
            }
        }
    }
}

#[test]
fn vec_dot_matches_dequantized_reference_for_every_type() {
    all_types(vec_dot_q, "dispatched");
}

#[test]
fn portable_vec_dot_matches_dequantized_reference_for_every_type() {
    all_types(portable::vec_dot_q, "portable");
}

#[test]
fn extreme_weight_quants() {
    // All-ones and all-zeros quant bytes reach the ends of every type's quant range
    // (Q8_0/Q8_K weights reach -1 and 0; 0x80 bytes reach -128).
    let mut rng = Rng::new(5);
    for w in QuantType::ALL {
        let k = 2 * w.block_size();
        for fill in [0x00u8, 0xFF, 0x80, 0x7F] {
            let mut wrow = random_row(&mut rng, w, k);
            let scales = random_row(&mut rng, w, k);
            for (b, s) in wrow
                .chunks_exact_mut(w.block_bytes())
                .zip(scales.chunks_exact(w.block_bytes()))
            {
                b.fill(fill);
                // keep the scale fields finite: copy them from a random valid block
                for (i, byte) in b.iter_mut().enumerate() {
                    let is_scale = match w {
                        QuantType::Q4_0 | QuantType::Q5_0 | QuantType::Q8_0 => i < 2,
                        QuantType::Q4_1 | QuantType::Q5_1 | QuantType::Q4_K | QuantType::Q5_K => {
                            i < 4
                        }
                        QuantType::Q2_K => i >= 80,
                        QuantType::Q3_K => i >= 108,
                        QuantType::Q6_K => i >= 208,
                        QuantType::Q8_K => i < 4,
                    };
                    if is_scale {
                        *byte = s[i];
                    }
                }
            }
            for x in activation_cases(&mut rng, k) {
                check_dot(vec_dot_q, w, k, &wrow, &x, "dispatched");
                check_dot(portable::vec_dot_q, w, k, &wrow, &x, "portable");
            }
        }
    }
}

type GemmQ =
    unsafe fn(QuantType, usize, usize, usize, *const u8, usize, *const u8, usize, *mut f32, usize);

#[test]
fn gemm_nt_q_matches_looped_vec_dot() {
    let mut rng = Rng::new(9);
    let cases: [(GemmQ, VecDot); 2] = [
        (gemm_nt_q, vec_dot_q),
        (portable::gemm_nt_q, portable::vec_dot_q),
    ];
    for (gemm, dot) in cases {
        for w in QuantType::ALL {
            for &(m, n, blocks) in &[(1, 1, 1), (1, 7, 2), (3, 5, 3), (5, 9, 1), (2, 13, 4)] {
                let k = blocks * w.block_size();
                let at = activation_type(w);
                // Rows padded past their minimal size, to test the strides.
                let w_stride = w.bytes_for(k).unwrap() + 3;
                let a_stride = at.bytes_for(k).unwrap() + 5;
                let mut wq = vec![0u8; n * w_stride];
                for j in 0..n {
                    let row = random_row(&mut rng, w, k);
                    wq[j * w_stride..j * w_stride + row.len()].copy_from_slice(&row);
                }
                let mut act = vec![0u8; m * a_stride];
                for i in 0..m {
                    let q = quantize(w, &rng.vec(k));
                    act[i * a_stride..i * a_stride + q.len()].copy_from_slice(&q);
                }
                let ldc = n + 2;
                let mut c = vec![f32::NAN; m * ldc];
                // SAFETY: buffers sized for the strides above.
                unsafe {
                    gemm(
                        w,
                        m,
                        n,
                        k,
                        act.as_ptr(),
                        a_stride,
                        wq.as_ptr(),
                        w_stride,
                        c.as_mut_ptr(),
                        ldc,
                    )
                };
                for i in 0..m {
                    for j in 0..n {
                        // SAFETY: rows in bounds.
                        let want = unsafe {
                            dot(
                                w,
                                k,
                                wq.as_ptr().add(j * w_stride),
                                act.as_ptr().add(i * a_stride),
                            )
                        };
                        let got = c[i * ldc + j];
                        assert!(
                            (got - want).abs() <= 1e-6 * want.abs().max(1e-3),
                            "{w} m={m} n={n} k={k}: C[{i}][{j}] = {got}, vec_dot {want}"
                        );
                    }
                    assert!(c[i * ldc + n].is_nan(), "padding of C written");
                }
            }
        }
    }
}

#[test]
fn gemm_nt_q_prefill_route_matches_vec_dot() {
    // From VIA_F32_MIN_M activation rows on, the AVX2 path multiplies dequantized values
    // in f32: equal to the integer dots up to rounding.
    let mut rng = Rng::new(31);
    for w in QuantType::ALL {
        let (m, n) = (kiln_cpu_kernels::quant_dot::VIA_F32_MIN_M + 3, 300);
        let k = 2 * w.block_size();
        let at = activation_type(w);
        let (wb, ab) = (w.bytes_for(k).unwrap(), at.bytes_for(k).unwrap());
        let wq: Vec<u8> = (0..n).flat_map(|_| random_row(&mut rng, w, k)).collect();
        let act: Vec<u8> = (0..m).flat_map(|_| quantize(w, &rng.vec(k))).collect();
        let mut c = vec![0.0f32; m * n];
        // SAFETY: m activation rows, n weight rows, C m×n.
        unsafe {
            gemm_nt_q(
                w,
                m,
                n,
                k,
                act.as_ptr(),
                ab,
                wq.as_ptr(),
                wb,
                c.as_mut_ptr(),
                n,
            )
        };
        for i in 0..m {
            let ad = dequant(at, &act[i * ab..(i + 1) * ab]);
            for j in 0..n {
                let wd = dequant(w, &wq[j * wb..(j + 1) * wb]);
                let mag: f64 = wd
                    .iter()
                    .zip(&ad)
                    .map(|(x, y)| (f64::from(*x) * f64::from(*y)).abs())
                    .sum();
                // SAFETY: rows in bounds.
                let want =
                    unsafe { vec_dot_q(w, k, wq.as_ptr().add(j * wb), act.as_ptr().add(i * ab)) };
                let got = c[i * n + j];
                assert!(
                    f64::from((got - want).abs()) <= 1e-5 * mag + 1e-12,
                    "{w}: C[{i}][{j}] = {got}, vec_dot {want}"
                );
            }
        }
    }
}

#[test]
fn dispatched_and_portable_dots_agree() {
    let mut rng = Rng::new(77);
    for w in QuantType::ALL {
        let k = 4 * w.block_size();
        for _ in 0..20 {
            let wrow = random_row(&mut rng, w, k);
            let act = quantize(w, &rng.vec(k));
            // SAFETY: both rows hold k elements.
            let (a, b) = unsafe {
                (
                    vec_dot_q(w, k, wrow.as_ptr(), act.as_ptr()),
                    portable::vec_dot_q(w, k, wrow.as_ptr(), act.as_ptr()),
                )
            };
            // Summation orders differ; scale the tolerance by the magnitude of the terms.
            let mag: f64 = dequant(w, &wrow)
                .iter()
                .zip(dequant(activation_type(w), &act))
                .map(|(x, y)| (f64::from(*x) * f64::from(y)).abs())
                .sum();
            assert!(
                f64::from((a - b).abs()) <= 1e-5 * mag + 1e-12,
                "{w}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn dequantize_row_matches_kiln_ir() {
    let mut rng = Rng::new(13);
    for w in QuantType::ALL {
        let k = 3 * w.block_size();
        let row = random_row(&mut rng, w, k);
        let mut out = vec![0.0f32; k];
        // SAFETY: row holds k elements, out k f32.
        unsafe { kiln_cpu_kernels::dequantize_row(w, k, row.as_ptr(), out.as_mut_ptr()) };
        let want = dequant(w, &row);
        assert_eq!(
            out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn symbols_are_listed_and_callable() {
    let syms = kiln_cpu_kernels::symbols();
    let names: Vec<&str> = syms.iter().map(|s| s.0).collect();
    for name in [
        "kiln_gemm_nt_f32",
        "kiln_dot_f32",
        "kiln_vec_dot_q",
        "kiln_quantize_activations",
        "kiln_gemm_nt_q",
        "kiln_dequantize_row",
    ] {
        assert!(names.contains(&name), "{name} missing");
    }
    assert!(syms.iter().all(|s| !s.1.is_null()));
    // Through the C entry points: quantize then dot, with the GGUF id of Q4_K.
    let mut rng = Rng::new(21);
    let w = QuantType::Q4_K;
    let k = 512;
    let x = rng.vec(k);
    let wrow = random_row(&mut rng, w, k);
    let mut act = vec![0u8; 584];
    let mut c = [0.0f32; 1];
    // SAFETY: buffers sized for k = 512 (two Q4_K / Q8_K blocks).
    unsafe {
        kiln_cpu_kernels::ffi::kiln_quantize_activations(
            w.gguf_type_id(),
            x.as_ptr(),
            k,
            act.as_mut_ptr(),
        );
        let d =
            kiln_cpu_kernels::ffi::kiln_vec_dot_q(w.gguf_type_id(), k, wrow.as_ptr(), act.as_ptr());
        kiln_cpu_kernels::ffi::kiln_gemm_nt_q(
            w.gguf_type_id(),
            1,
            1,
            k,
            act.as_ptr(),
            584,
            wrow.as_ptr(),
            288,
            c.as_mut_ptr(),
            1,
        );
        assert_eq!(d, vec_dot_q(w, k, wrow.as_ptr(), act.as_ptr()));
        assert_eq!(c[0], d);
    }
    assert_eq!(act, quantize(w, &x));
}
