//! The CPU backend's inline `exp` and `tanh` against the interpreter. `exp` of f32 is defined
//! by an algorithm in f32 operations (`kiln_ir::numerics::exp_f32`) that the backend repeats:
//! bit for bit. `tanh` is computed in f64 and rounded once, the interpreter's is correctly
//! rounded: at most one f32 ulp apart anywhere, equal almost always (at most 1 in 1000). The
//! special values (NaN, infinities, overflow, underflow, signed zero) are exact.

use kiln_compiler::compile;
use kiln_ir::interp::{run, Env};
use kiln_ir::{Bindings, DType, Dim, Graph, Shape, Tensor};
use kiln_runtime::{CpuExecutable, CpuOptions};

/// `op` over special and random inputs: every result within 1 ulp of the interpreter's, and
/// at most `max_differ` of them an ulp off.
fn check(op: &str, max_differ: f64) {
    let mut values: Vec<f32> = vec![
        0.0,
        -0.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        88.72,
        88.73,
        89.5,
        -87.3,
        -103.9,
        -104.0,
        -200.0,
        1e-30,
        -1e-30,
        1e-4,
        9.99e-4,
        1.001e-3,
        f32::MIN_POSITIVE,
        f32::MAX,
    ];
    let mut s = 12345u64;
    for _ in 0..20000 {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let u = (s >> 11) as f64 / (1u64 << 53) as f64;
        values.push(((u * 2.0 - 1.0) * 110.0) as f32);
        values.push(((u * 2.0 - 1.0) * 4.0) as f32);
    }
    let n = values.len();
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, Shape::new([Dim::from("n")]))
        .unwrap();
    let y = if op == "exp" { g.exp(x) } else { g.tanh(x) }.unwrap();
    g.set_output("y", y).unwrap();
    let xt = Tensor::from_vec(vec![n], values.clone()).unwrap();
    let want = run(&g, &Env::new().input("x", xt.clone())).unwrap().outputs[0]
        .1
        .as_slice::<f32>()
        .unwrap()
        .to_vec();
    let c = compile(&g, None).unwrap();
    let mut exe = CpuExecutable::new(&c, &CpuOptions { threads: 1 }).unwrap();
    let got = exe.run(&[("x", &xt)], &Bindings::new()).unwrap()[0]
        .1
        .as_slice::<f32>()
        .unwrap()
        .to_vec();
    let mut differ = 0;
    for i in 0..n {
        let (a, b) = (want[i], got[i]);
        if a.is_nan() || b.is_nan() {
            assert!(a.is_nan() && b.is_nan(), "{op}({}): {a} vs {b}", values[i]);
            continue;
        }
        if a.to_bits() != b.to_bits() {
            differ += 1;
            let ulps = (a.to_bits() as i64 - b.to_bits() as i64).abs();
            assert!(
                ulps <= 1 && a.is_finite() && a != 0.0,
                "{op}({}): {a} vs {b} ({ulps} ulps)",
                values[i]
            );
        }
    }
    assert!(
        differ as f64 <= max_differ * n as f64,
        "{op}: {differ} of {n} differ by an ulp"
    );
}

#[test]
fn exp_matches_the_interpreter() {
    check("exp", 0.0);
}

#[test]
fn tanh_matches_the_interpreter() {
    check("tanh", 0.001);
}
