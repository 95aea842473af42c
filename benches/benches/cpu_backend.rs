//! The Cranelift CPU backend end to end: graphs compiled by Kiln and run by
//! `kiln_runtime::CpuExecutable`, side by side with the peers in one run.
//!
//! - `backend_gemm/*`: `y = x @ W^T` (and with a fused bias + SiLU epilogue) at 512³,
//!   2048³ and the SmolLM2-135M prefill shapes, against the `gemm` crate and
//!   `matrixmultiply` (same shapes, same thread count). Throughput: FLOPs (2·m·n·k).
//! - `backend_qmatvec/*`: decode-shaped products `x[1, k] @ Wq^T` with Q4_1/Q4_K/Q8_0
//!   weights (Q4_K with k = 512 for 576: its rows must be whole 256-element blocks), on the
//!   runtime's f32-activation route; with `KILN_Q8_ACTIVATIONS=1` on its 8-bit-activation
//!   route instead (ids `q4_1-q8act`, ...). Throughput: weight bytes (compare with
//!   `bandwidth/read`).
//! - `backend_norm/*`: a fused RMSNorm and a softmax. Throughput: bytes read + written.
//! - `bandwidth/read`: summing a 256 MiB buffer (the machine's read bandwidth, measured in
//!   the same run).
//!
//! Run: `cargo bench -p kiln-benches --bench cpu_backend` (see benches/README.md).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kiln_compiler::compile;
use kiln_ir::{Bindings, DType, Dim, Graph, QuantType, Scalar, Shape, Tensor};
use kiln_runtime::{CpuExecutable, CpuOptions};
use std::hint::black_box;
use std::time::Duration;

fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn threads() -> usize {
    std::env::var("KILN_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// `x[m, k] @ w[n, k]^T`, optionally `silu(... + bias)`.
fn gemm_graph(k: usize, n: usize, wdtype: DType, epilogue: bool) -> Graph {
    let mut g = Graph::new();
    let x = g
        .input(
            "x",
            DType::F32,
            Shape::new([Dim::from("m"), Dim::from(k as i64)]),
        )
        .unwrap();
    let w = g
        .param("w", wdtype, Shape::new([n as i64, k as i64]))
        .unwrap();
    let mut y = g.matmul_t(x, w, false, true).unwrap();
    if epilogue {
        let b = g.param("b", DType::F32, Shape::new([n as i64])).unwrap();
        y = g.add(y, b).unwrap();
        let s = g.sigmoid_like(y);
        y = g.mul(y, s).unwrap();
    }
    g.set_output("y", y).unwrap();
    g
}

trait Sigmoid {
    fn sigmoid_like(&mut self, x: kiln_ir::NodeId) -> kiln_ir::NodeId;
}

impl Sigmoid for Graph {
    /// `1 / (1 + exp(-x))`.
    fn sigmoid_like(&mut self, x: kiln_ir::NodeId) -> kiln_ir::NodeId {
        let n = self.neg(x).unwrap();
        let e = self.exp(n).unwrap();
        let one = self.scalar(Scalar::Float(1.0), DType::F32).unwrap();
        let d = self.add(e, one).unwrap();
        self.recip(d).unwrap()
    }
}

fn executable(g: &Graph, params: &[(&str, Tensor)], threads: usize) -> CpuExecutable {
    let c = compile(g, None).expect("compile");
    let mut exe = CpuExecutable::new(&c, &CpuOptions { threads }).expect("jit");
    for (name, t) in params {
        exe.set_param(name, t).expect("param");
    }
    exe
}

fn gemm(c: &mut Criterion) {
    let threads = threads();
    let mut group = c.benchmark_group("backend_gemm");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_millis(500));
    let shapes: &[(usize, usize, usize)] = &[
        (512, 512, 512),
        (128, 576, 576),
        (128, 1536, 576),
        (128, 576, 1536),
        (512, 576, 576),
        (512, 1536, 576),
        (512, 576, 1536),
        (2048, 2048, 2048),
    ];
    for &(m, n, k) in shapes {
        let id = format!("{m}x{n}x{k}");
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        let x = Tensor::from_vec(vec![m, k], rand(m * k, 1)).unwrap();
        let w = rand(n * k, 2);
        let wt = Tensor::from_vec(vec![n, k], w.clone()).unwrap();
        let bias = Tensor::from_vec(vec![n], rand(n, 3)).unwrap();
        for epilogue in [false, true] {
            let g = gemm_graph(k, n, DType::F32, epilogue);
            let mut params = vec![("w", wt.clone())];
            if epilogue {
                params.push(("b", bias.clone()));
            }
            let mut exe = executable(&g, &params, threads);
            let name = if epilogue { "kiln+bias+silu" } else { "kiln" };
            group.bench_function(BenchmarkId::new(name, &id), |bch| {
                bch.iter(|| black_box(exe.run(&[("x", &x)], &Bindings::new()).unwrap()))
            });
        }
        let xs = x.as_slice::<f32>().unwrap().to_vec();
        let mut out = vec![0f32; m * n];
        let par = if threads > 1 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        group.bench_function(BenchmarkId::new("gemm-crate", &id), |bch| {
            bch.iter(|| unsafe {
                // out[m, n] = x[m, k] @ w[n, k]^T: rhs column stride 1 along k... w as [k, n]
                // with row stride 1 and column stride k.
                gemm::gemm(
                    m,
                    n,
                    k,
                    out.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    xs.as_ptr(),
                    1,
                    k as isize,
                    w.as_ptr(),
                    k as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                );
                black_box(&out);
            })
        });
        if threads == 1 {
            group.bench_function(BenchmarkId::new("matrixmultiply", &id), |bch| {
                bch.iter(|| unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        xs.as_ptr(),
                        k as isize,
                        1,
                        w.as_ptr(),
                        1,
                        k as isize,
                        0.0,
                        out.as_mut_ptr(),
                        n as isize,
                        1,
                    );
                    black_box(&out);
                })
            });
        }
    }
    group.finish();
}

/// Random valid blocks: random quant bytes with small finite f16 scales.
fn random_blocks(q: QuantType, elements: usize) -> Vec<u8> {
    let mut s = 0x2545f4914f6cdd1du64;
    let mut bytes: Vec<u8> = (0..q.bytes_for(elements).unwrap())
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect();
    for block in bytes.chunks_exact_mut(q.block_bytes()) {
        for &off in q.f16_scale_offsets() {
            let v = half::f16::from_f32(0.01);
            block[off..off + 2].copy_from_slice(&v.to_bits().to_le_bytes());
        }
    }
    bytes
}

fn qmatvec(c: &mut Criterion) {
    let threads = threads();
    let mut group = c.benchmark_group("backend_qmatvec");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_millis(500));
    for q in [QuantType::Q4_1, QuantType::Q4_K, QuantType::Q8_0] {
        for &(n, k) in &[(1536usize, 576usize), (576, 1536), (49152, 576)] {
            // The K types need whole 256-element blocks per row: 512 stands in for 576.
            let k = if q.block_size() == 256 && k % 256 != 0 {
                512
            } else {
                k
            };
            let bytes = random_blocks(q, n * k);
            group.throughput(Throughput::Bytes(bytes.len() as u64));
            let wt = Tensor::quantized(q, vec![n, k], bytes).unwrap();
            let g = gemm_graph(k, n, DType::Quant(q), false);
            let mut exe = executable(&g, &[("w", wt)], threads);
            let x = Tensor::from_vec(vec![1, k], rand(k, 5)).unwrap();
            // The few-row route the runtime takes (see `runtime/src/cpu/gemm.rs`).
            let route = if kiln_runtime::cpu::q8_activations() {
                "-q8act"
            } else {
                ""
            };
            let id = BenchmarkId::new(format!("{}{route}", q.name()), format!("{n}x{k}"));
            group.bench_function(id, |bch| {
                bch.iter(|| black_box(exe.run(&[("x", &x)], &Bindings::new()).unwrap()))
            });
        }
    }
    group.finish();
}

fn norms(c: &mut Criterion) {
    let threads = threads();
    let mut group = c.benchmark_group("backend_norm");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_millis(500));
    let (rows, width) = (512usize, 576usize);
    // RMSNorm: x * rsqrt(mean(x^2) + eps) * w
    let mut g = Graph::new();
    let x = g
        .input(
            "x",
            DType::F32,
            Shape::new([Dim::from("m"), Dim::from(width as i64)]),
        )
        .unwrap();
    let w = g
        .param("w", DType::F32, Shape::new([width as i64]))
        .unwrap();
    let sq = g.mul(x, x).unwrap();
    let s = g.sum(sq, &[1], true).unwrap();
    let inv = g
        .scalar(Scalar::Float(1.0 / width as f64), DType::F32)
        .unwrap();
    let mean = g.mul(s, inv).unwrap();
    let eps = g.scalar(Scalar::Float(1e-5), DType::F32).unwrap();
    let me = g.add(mean, eps).unwrap();
    let r = g.rsqrt(me).unwrap();
    let y = g.mul(x, r).unwrap();
    let y = g.mul(y, w).unwrap();
    g.set_output("y", y).unwrap();
    let wt = Tensor::from_vec(vec![width], rand(width, 8)).unwrap();
    let mut exe = executable(&g, &[("w", wt)], threads);
    let xt = Tensor::from_vec(vec![rows, width], rand(rows * width, 9)).unwrap();
    group.throughput(Throughput::Bytes((2 * rows * width * 4) as u64));
    group.bench_function(
        BenchmarkId::new("rmsnorm", format!("{rows}x{width}")),
        |bch| bch.iter(|| black_box(exe.run(&[("x", &xt)], &Bindings::new()).unwrap())),
    );
    // Softmax over the last axis.
    let (rows, width) = (9 * 128usize, 512usize);
    let mut g = Graph::new();
    let x = g
        .input(
            "x",
            DType::F32,
            Shape::new([Dim::from("m"), Dim::from(width as i64)]),
        )
        .unwrap();
    let mx = g.max(x, &[1], true).unwrap();
    let d = g.sub(x, mx).unwrap();
    let e = g.exp(d).unwrap();
    let z = g.sum(e, &[1], true).unwrap();
    let y = g.div(e, z).unwrap();
    g.set_output("y", y).unwrap();
    let mut exe = executable(&g, &[], threads);
    let xt = Tensor::from_vec(vec![rows, width], rand(rows * width, 10)).unwrap();
    group.throughput(Throughput::Bytes((2 * rows * width * 4) as u64));
    group.bench_function(
        BenchmarkId::new("softmax", format!("{rows}x{width}")),
        |bch| bch.iter(|| black_box(exe.run(&[("x", &xt)], &Bindings::new()).unwrap())),
    );
    group.finish();
}

fn bandwidth(c: &mut Criterion) {
    let mut group = c.benchmark_group("bandwidth");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(2));
    let n = 64 << 20; // 256 MiB of f32
    let v = vec![1.0f32; n];
    group.throughput(Throughput::Bytes((n * 4) as u64));
    group.bench_function("read", |bch| {
        bch.iter(|| {
            // Eight independent sums so the loop is bound by memory, not by add latency.
            let mut acc = [0f32; 8];
            for c in v.chunks_exact(8) {
                for i in 0..8 {
                    acc[i] += c[i];
                }
            }
            black_box(acc)
        })
    });
    group.finish();
}

criterion_group!(benches, gemm, qmatvec, norms, bandwidth);
criterion_main!(benches);
