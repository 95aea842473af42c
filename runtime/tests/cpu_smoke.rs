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
