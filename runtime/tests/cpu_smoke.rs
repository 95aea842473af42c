//! First checks of the CPU backend against the reference interpreter.

use kiln_compiler::compile;
use kiln_ir::interp::{run, Env};
use kiln_ir::{Bindings, DType, Dim, Graph, Scalar, Shape, Tensor};
use kiln_runtime::{CpuExecutable, CpuOptions};

fn rand(n: usize, seed: u64) -> Vec<f32> {
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

#[test]
fn matmul_softmax_rmsnorm() {
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, Shape::new([Dim::from("n"), Dim::from(17)]))
        .unwrap();
    let w = g.param("w", DType::F32, Shape::new([31, 17])).unwrap();
    let y = g.matmul_t(x, w, false, true).unwrap();
    let t = g.tanh(y).unwrap();
    let sq = g.mul(t, t).unwrap();
    let m = g.sum(sq, &[1], true).unwrap();
    let k = g.scalar(Scalar::Float(1.0 / 31.0), DType::F32).unwrap();
    let m = g.mul(m, k).unwrap();
    let r = g.rsqrt(m).unwrap();
    let n = g.mul(t, r).unwrap();
    let mx = g.max(n, &[1], true).unwrap();
    let d = g.sub(n, mx).unwrap();
    let e = g.exp(d).unwrap();
    let z = g.sum(e, &[1], true).unwrap();
    let s = g.div(e, z).unwrap();
    g.set_output("s", s).unwrap();
    let wt = Tensor::from_vec(vec![31, 17], rand(31 * 17, 1)).unwrap();
    for rows in [1usize, 3, 40] {
        let xt = Tensor::from_vec(vec![rows, 17], rand(rows * 17, rows as u64)).unwrap();
        let mut env = Env::new();
        env.set_input("x", xt.clone());
        env.set_param("w", wt.clone());
        let want = run(&g, &env).unwrap();
        for opt in [None, Some(&Default::default())] {
            let c = compile(&g, opt).unwrap();
            for threads in [1, 2] {
                let mut exe = CpuExecutable::new(&c, &CpuOptions { threads }).unwrap();
                assert_eq!(exe.split_matmuls(), 1);
                exe.set_param("w", &wt).unwrap();
                let got = exe.run(&[("x", &xt)], &Bindings::new()).unwrap();
                let a = want.outputs[0].1.to_f64_vec().unwrap();
                let b = got[0].1.to_f64_vec().unwrap();
                assert_eq!(a.len(), b.len());
                for (i, (p, q)) in a.iter().zip(&b).enumerate() {
                    assert!((p - q).abs() <= 1e-6 * p.abs().max(1e-3), "{i}: {p} vs {q}");
                }
            }
        }
    }
}

/// A matmul against a block-quantized weight runs through the quantized micro-kernels and
/// matches the interpreter's exact product to f32 rounding; an executable that quantizes
/// activations (the LLM default) within the activation-quantization error for fewer than
/// 16 rows.
#[test]
fn quantized_weight_matmul() {
    use kiln_ir::QuantType;
    for (q, q8) in QuantType::ALL
        .into_iter()
        .flat_map(|q| [(q, false), (q, true)])
    {
        let (n, k) = (37usize, 2 * 256usize);
        let mut g = Graph::new();
        let x = g
            .input(
                "x",
                DType::F32,
                Shape::new([Dim::from("m"), Dim::from(k as i64)]),
            )
            .unwrap();
        let w = g
            .param("w", DType::Quant(q), Shape::new([n as i64, k as i64]))
            .unwrap();
        let y = g.matmul_t(x, w, false, true).unwrap();
        g.set_output("y", y).unwrap();
        let bytes = random_blocks(q, n * k);
        let wt = Tensor::quantized(q, vec![n, k], bytes).unwrap();
        let c = compile(&g, None).unwrap();
        let mut exe = CpuExecutable::new(&c, &CpuOptions { threads: 2 }).unwrap();
        assert_eq!(exe.split_matmuls(), 1);
        exe.quantize_activations(q8);
        exe.set_param("w", &wt).unwrap();
        // 790 rows: two row blocks of the dequantizing route (tasks of 768 rows).
        for m in [1usize, 5, 20, 70, 790] {
            let xt = Tensor::from_vec(vec![m, k], rand(m * k, m as u64 + 3)).unwrap();
            let mut env = Env::new();
            env.set_input("x", xt.clone());
            env.set_param("w", wt.clone());
            let want = run(&g, &env).unwrap().outputs[0].1.to_f64_vec().unwrap();
            let got = exe.run(&[("x", &xt)], &Bindings::new()).unwrap()[0]
                .1
                .to_f64_vec()
                .unwrap();
            let scale = want.iter().map(|v| v.abs()).fold(0.0, f64::max).max(1.0);
            // Over all outputs: f32 products (of f32 activations with the quantized blocks
            // for few rows, of dequantized weight panels for many); quantizing executables
            // (or KILN_Q8_ACTIVATIONS=1) quantize the activations of few rows to 8 bits
            // (about 0.4% RMS).
            let q8 = m < 16 && exe.quantizes_activations();
            let err: f64 = want.iter().zip(&got).map(|(a, b)| (a - b) * (a - b)).sum();
            let norm: f64 = want.iter().map(|a| a * a).sum();
            let rel_rms = (err / norm.max(1e-300)).sqrt();
            let (limit, elem) = if q8 { (1e-2, 0.02) } else { (1e-5, 1e-5) };
            assert!(
                rel_rms < limit,
                "{q:?} q8 {q8} m={m}: relative RMS error {rel_rms}"
            );
            for (i, (a, b)) in want.iter().zip(&got).enumerate() {
                assert!(
                    (a - b).abs() <= elem * scale,
                    "{q:?} q8 {q8} m={m} {i}: {a} vs {b}"
                );
            }
        }
    }
}

/// Random valid blocks: random quant bytes with small finite f16 (or f32) scales.
fn random_blocks(q: kiln_ir::QuantType, elements: usize) -> Vec<u8> {
    let raw: Vec<u8> = rand(q.bytes_for(elements).unwrap(), 77)
        .iter()
        .map(|v| ((v + 1.0) * 127.9) as u8)
        .collect();
    let mut bytes = raw;
    let scales = rand(bytes.len(), 5);
    for (i, block) in bytes.chunks_exact_mut(q.block_bytes()).enumerate() {
        for &off in q.f16_scale_offsets() {
            let v = half::f16::from_f32(scales[i % scales.len()] * 0.05);
            block[off..off + 2].copy_from_slice(&v.to_bits().to_le_bytes());
        }
        if q == kiln_ir::QuantType::Q8_K {
            block[..4].copy_from_slice(&(scales[i] * 0.01).to_le_bytes());
        }
    }
    bytes
}
