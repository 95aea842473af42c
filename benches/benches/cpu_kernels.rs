//! Single-thread speed of `kiln-cpu-kernels`: f32 GEMM (GFLOP/s) against the `gemm` and
//! `matrixmultiply` crates on LLM shapes, quantized matrix-vector products (weight GB/s) at
//! decode shapes with 8-bit (`quant_matvec`) and f32 (`quant_f32_matvec`) activations, and
//! the machine's streaming memory bandwidth in the same run.
//!
//! Filter with criterion's usual argument, e.g. `cargo bench -p kiln-benches --bench
//! cpu_kernels -- f32_gemm/kiln`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kiln_cpu_kernels::{
    activation_type, gemm_nt_f32, gemm_nt_q, gemm_nt_qf32, quantize_activations, QuantType,
};

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `C (m×n) = A (m×k) · B (n×k)ᵀ` shapes: SmolLM2-135M projections at prefill 128 and
/// 512 tokens (q/o, gate/up, down, the 49152-wide LM head) and two cubes.
const F32_SHAPES: [(usize, usize, usize); 8] = [
    (128, 576, 576),
    (128, 1536, 576),
    (128, 576, 1536),
    (512, 576, 576),
    (512, 1536, 576),
    (512, 49152, 576),
    (512, 512, 512),
    (2048, 2048, 2048),
];

fn f32_gemm(c: &mut Criterion) {
    let mut group = c.benchmark_group("f32_gemm");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for &(m, n, k) in &F32_SHAPES {
        let a = values(m * k, 1);
        let b = values(n * k, 2);
        let mut out = vec![0.0f32; m * n];
        let id = format!("{m}x{n}x{k}");
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        group.bench_function(BenchmarkId::new("kiln", &id), |bch| {
            bch.iter(|| {
                // SAFETY: A is m×k, B n×k, C m×n, all contiguous.
                unsafe { gemm_nt_f32(m, n, k, a.as_ptr(), k, b.as_ptr(), k, out.as_mut_ptr(), n) }
            })
        });
        group.bench_function(BenchmarkId::new("gemm-crate", &id), |bch| {
            bch.iter(|| {
                // SAFETY: dst m×n (row stride n), lhs = A (m×k, row stride k), rhs = Bᵀ
                // (k×n: column j is row j of B, so column stride k, row stride 1).
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        out.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        a.as_ptr(),
                        1,
                        k as isize,
                        b.as_ptr(),
                        k as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    )
                }
            })
        });
        group.bench_function(BenchmarkId::new("matrixmultiply", &id), |bch| {
            bch.iter(|| {
                // SAFETY: same layouts as above, in matrixmultiply's (row, column) strides.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        a.as_ptr(),
                        k as isize,
                        1,
                        b.as_ptr(),
                        1,
                        k as isize,
                        0.0,
                        out.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                }
            })
        });
    }
    group.finish();
}

/// Random valid blocks of `w` (finite scales) for `rows` rows of `k` elements.
fn weights(w: QuantType, rows: usize, k: usize) -> Vec<u8> {
    let bytes = w.bytes_for(k).unwrap() * rows;
    let mut s = 0x1234_5678u64;
    let mut out: Vec<u8> = (0..bytes)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 56) as u8
        })
        .collect();
    let scale = half::f16::from_f32(0.01).to_bits().to_le_bytes();
    for block in out.chunks_exact_mut(w.block_bytes()) {
        for &f in w.f16_scale_offsets() {
            block[f..f + 2].copy_from_slice(&scale);
        }
    }
    out
}

/// Decode-time matrix-vector products: one activation row times `n` weight rows of `k`
/// (SmolLM2-135M: gate/up 1536×576, down 576×1536, LM head 49152×576; the K types need
/// `k` a multiple of 256, so they use 512 for 576).
fn quant_matvec(c: &mut Criterion) {
    let mut group = c.benchmark_group("quant_matvec");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for w in [
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q8_0,
        QuantType::Q4_K,
        QuantType::Q6_K,
    ] {
        for &(n, k) in &[(1536usize, 576usize), (576, 1536), (49152, 576)] {
            let k = if w.block_size() == 256 {
                k / 256 * 256
            } else {
                k
            };
            let wq = weights(w, n, k);
            let x = values(k, 3);
            let mut act = vec![0u8; activation_type(w).bytes_for(k).unwrap()];
            quantize_activations(w, &x, &mut act);
            let mut out = vec![0.0f32; n];
            let row = w.bytes_for(k).unwrap();
            group.throughput(Throughput::Bytes(wq.len() as u64));
            group.bench_function(BenchmarkId::new(w.name(), format!("{n}x{k}")), |bch| {
                bch.iter(|| {
                    // SAFETY: one activation row, n weight rows of `row` bytes, C 1×n.
                    unsafe {
                        gemm_nt_q(
                            w,
                            1,
                            n,
                            k,
                            act.as_ptr(),
                            act.len(),
                            wq.as_ptr(),
                            row,
                            out.as_mut_ptr(),
                            n,
                        )
                    }
                })
            });
        }
    }
    group.finish();
}

/// The same decode-time products with f32 activations (`gemm_nt_qf32`: no activation
/// quantization, exact to f32 rounding), for every weight type, and with 4 activation
/// rows (a short prompt) for the SmolLM2 file's types.
fn quant_f32_matvec(c: &mut Criterion) {
    let mut group = c.benchmark_group("quant_f32_matvec");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    // Every weight type but Q8_K (an activation format: no GGUF weights use it).
    for w in QuantType::ALL.into_iter().filter(|w| *w != QuantType::Q8_K) {
        for &(m, n, k) in &[
            (1usize, 1536usize, 576usize),
            (1, 576, 1536),
            (1, 49152, 576),
            (4, 1536, 576),
        ] {
            if m > 1 && !matches!(w, QuantType::Q4_1 | QuantType::Q8_0) {
                continue;
            }
            let k = if w.block_size() == 256 {
                k / 256 * 256
            } else {
                k
            };
            let wq = weights(w, n, k);
            let x = values(m * k, 3);
            let mut out = vec![0.0f32; m * n];
            let row = w.bytes_for(k).unwrap();
            group.throughput(Throughput::Bytes(wq.len() as u64));
            let id = if m == 1 {
                format!("{n}x{k}")
            } else {
                format!("{n}x{k} m={m}")
            };
            group.bench_function(BenchmarkId::new(w.name(), id), |bch| {
                bch.iter(|| {
                    // SAFETY: m activation rows of k f32, n weight rows of `row` bytes,
                    // C m×n.
                    unsafe {
                        gemm_nt_qf32(
                            w,
                            m,
                            n,
                            k,
                            x.as_ptr(),
                            k,
                            wq.as_ptr(),
                            row,
                            out.as_mut_ptr(),
                            n,
                        )
                    }
                })
            });
        }
    }
    group.finish();
}

/// Streaming read bandwidth of one core: the sum of a 256 MiB f32 array.
fn memory_bandwidth(c: &mut Criterion) {
    let mut group = c.benchmark_group("memory");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    let data = values(64 << 20, 4);
    group.throughput(Throughput::Bytes((data.len() * 4) as u64));
    group.bench_function("sum 256 MiB f32", |bch| {
        bch.iter(|| {
            let mut acc = [0.0f32; 16];
            for chunk in data.chunks_exact(16) {
                for (a, v) in acc.iter_mut().zip(chunk) {
                    *a += v;
                }
            }
            acc.iter().sum::<f32>()
        })
    });
    group.finish();
}

/// Quantizing one activation row for the integer-dot route (once per decode product).
fn activation_quantization(c: &mut Criterion) {
    let mut group = c.benchmark_group("quantize_activations");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for w in [QuantType::Q4_1, QuantType::Q4_K] {
        let k = 1536;
        let x = values(k, 5);
        let mut act = vec![0u8; activation_type(w).bytes_for(k).unwrap()];
        group.throughput(Throughput::Elements(k as u64));
        group.bench_function(BenchmarkId::new(w.name(), k), |bch| {
            bch.iter(|| quantize_activations(w, &x, &mut act))
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    memory_bandwidth,
    f32_gemm,
    quant_matvec,
    quant_f32_matvec,
    activation_quantization
);
criterion_main!(benches);
