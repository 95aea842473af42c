//! Tensor methods on symbolic shapes: each graph is traced once and evaluated at two values
//! of its symbols, against references computed here.

use kiln_ir::interp::{run, Env};
use kiln_ir::{DType, Graph, Op, Tensor as Value};
use kiln_nn::{dims, Tensor, Trace};

/// `n` deterministic f32 values in [-2, 2) (a small LCG).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

fn f32s(shape: &[usize], seed: u64) -> Value {
    let n = shape.iter().product();
    Value::from_vec(shape.to_vec(), values(n, seed)).unwrap()
}

fn eval(g: &Graph, env: &Env, output: &str) -> Value {
    let out = run(g, env).unwrap_or_else(|e| panic!("interpreter: {e}"));
    out.get(output).unwrap().clone()
}

fn assert_close(what: &str, got: &Value, want_shape: &[usize], want: &[f64], rtol: f64) {
    assert_eq!(got.shape(), want_shape, "{what}: shape");
    let g = got.to_f64_vec().unwrap();
    assert_eq!(g.len(), want.len(), "{what}: length");
    for (i, (a, b)) in g.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= rtol * b.abs() + 1e-6,
            "{what}: element {i}: got {a}, want {b}"
        );
    }
}

/// True if the graph reads a symbol's run-time value (so the result is not baked in).
fn has_dim_value(g: &Graph) -> bool {
    g.nodes()
        .iter()
        .any(|n| matches!(n.op, Op::DimValue { .. }))
}

#[test]
fn mean_and_var_over_a_symbolic_axis_use_its_runtime_size() {
    let tr = Trace::new();
    let x = tr.input("x", DType::F32, dims!["seq", 4]);
    let mean = x.mean(0, true);
    let var = x.var(0, false, 1);
    assert_eq!(mean.ty().to_string(), "f32[1, 4]");
    assert_eq!(var.ty().to_string(), "f32[4]");
    tr.output("mean", &mean);
    tr.output("var", &var);
    let g = tr.finish().unwrap();
    assert!(
        has_dim_value(&g),
        "the count must be a dim_value node:\n{g}"
    );
    for seq in [3usize, 7] {
        let xv = f32s(&[seq, 4], seq as u64);
        let data = xv.to_f64_vec().unwrap();
        let data = &data;
        let col = |c: usize| (0..seq).map(move |r| data[r * 4 + c]);
        let means: Vec<f64> = (0..4).map(|c| col(c).sum::<f64>() / seq as f64).collect();
        let vars: Vec<f64> = (0..4)
            .map(|c| col(c).map(|v| (v - means[c]).powi(2)).sum::<f64>() / (seq - 1) as f64)
            .collect();
        let env = Env::new().input("x", xv);
        assert_close("mean", &eval(&g, &env, "mean"), &[1, 4], &means, 1e-6);
        assert_close("var", &eval(&g, &env, "var"), &[4], &vars, 1e-5);
    }
}

#[test]
fn reshape_infers_a_symbolic_minus_one() {
    let tr = Trace::new();
    let x = tr.input("x", DType::F32, dims!["batch", "seq", 4]);
    let flat = x.reshape(dims![-1, 4]);
    assert_eq!(flat.ty().to_string(), "f32[batch*seq, 4]");
    let back = flat.view(dims!["batch", -1, 2]);
    assert_eq!(back.ty().to_string(), "f32[batch, 2*seq, 2]");
    let all = x.flatten(0, -1);
    assert_eq!(all.ty().to_string(), "f32[4*batch*seq]");
    tr.output("flat", &flat);
    tr.output("back", &back);
    let g = tr.finish().unwrap();
    for (b, s) in [(2usize, 3usize), (1, 7)] {
        let xv = f32s(&[b, s, 4], (b * 10 + s) as u64);
        let data = xv.to_f64_vec().unwrap();
        let env = Env::new().input("x", xv);
        assert_close("flat", &eval(&g, &env, "flat"), &[b * s, 4], &data, 0.0);
        assert_close("back", &eval(&g, &env, "back"), &[b, 2 * s, 2], &data, 0.0);
    }
}

#[test]
fn softmax_chunk_and_cat_along_symbolic_axes() {
    let tr = Trace::new();
    let x = tr.input("x", DType::F32, dims![2, "n"]);
    let y = tr.input("y", DType::F32, dims![2, "n"]);
    let both = Tensor::cat(&[x.clone(), y.clone()], -1);
    assert_eq!(both.ty().to_string(), "f32[2, 2*n]");
    let halves = both.chunk(2, -1);
    assert_eq!(halves.len(), 2);
    assert_eq!(halves[1].ty().to_string(), "f32[2, n]");
    let sm = x.softmax(-1);
    tr.output("second", &halves[1]);
    tr.output("sm", &sm);
    let g = tr.finish().unwrap();
    for n in [1usize, 5] {
        let (xv, yv) = (f32s(&[2, n], 1), f32s(&[2, n], 2));
        let xd = xv.to_f64_vec().unwrap();
        let mut want_sm = Vec::new();
        for row in xd.chunks(n) {
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
            want_sm.extend(row.iter().map(|v| (v - m).exp() / s));
        }
        let yd = yv.to_f64_vec().unwrap();
        let env = Env::new().input("x", xv).input("y", yv);
        assert_close("chunk", &eval(&g, &env, "second"), &[2, n], &yd, 0.0);
        assert_close("softmax", &eval(&g, &env, "sm"), &[2, n], &want_sm, 1e-6);
    }
}

#[test]
fn cache_write_and_causal_mask_with_symbolic_offsets() {
    let tr = Trace::new();
    let cache = tr.input("cache", DType::F32, dims!["total", 2]);
    let new = tr.input("new", DType::F32, dims!["seq", 2]);
    let written = cache.slice_update(0, "past", &new);
    let (past, seq) = (kiln_ir::Dim::symbol("past"), kiln_ir::Dim::symbol("seq"));
    let mask = Tensor::tril_mask(seq.clone(), past.clone() + seq, past);
    assert_eq!(mask.ty().to_string(), "bool[seq, past + seq]");
    let pos = Tensor::arange("seq", DType::I64) + Tensor::dim_value("past", DType::I64);
    tr.output("written", &written);
    tr.output("mask", &mask);
    tr.output("pos", &pos);
    let g = tr.finish().unwrap();
    for (past, seq) in [(0usize, 3usize), (4, 2)] {
        let total = past + seq + 1;
        let cv = f32s(&[total, 2], 3);
        let nv = f32s(&[seq, 2], 4);
        let mut want = cv.to_f64_vec().unwrap();
        want[past * 2..(past + seq) * 2].copy_from_slice(&nv.to_f64_vec().unwrap());
        let env = Env::new()
            .input("cache", cv)
            .input("new", nv)
            .bind("past", past as i64);
        assert_close(
            "slice_update",
            &eval(&g, &env, "written"),
            &[total, 2],
            &want,
            0.0,
        );
        let m = eval(&g, &env, "mask");
        assert_eq!(m.shape(), [seq, past + seq]);
        let got: Vec<bool> = m.as_slice::<bool>().unwrap().to_vec();
        let want: Vec<bool> = (0..seq)
            .flat_map(|r| (0..past + seq).map(move |c| c <= r + past))
            .collect();
        assert_eq!(got, want, "tril_mask past={past} seq={seq}");
        let p = eval(&g, &env, "pos");
        let want: Vec<i64> = (past as i64..(past + seq) as i64).collect();
        assert_eq!(p.as_slice::<i64>().unwrap(), want.as_slice());
    }
}

#[test]
fn expand_and_repeat_to_symbolic_sizes() {
    let tr = Trace::new();
    let x = tr.input("x", DType::F32, dims![1, 3]);
    let like = tr.input("like", DType::F32, dims!["rows", 3]);
    let e = x.expand_as(&like);
    assert_eq!(e.ty().to_string(), "f32[rows, 3]");
    let r = x.repeat(&[2, 1]).expand(dims![-1, -1]);
    tr.output("e", &e);
    tr.output("r", &r);
    let g = tr.finish().unwrap();
    for rows in [1usize, 4] {
        let xv = f32s(&[1, 3], 5);
        let row = xv.to_f64_vec().unwrap();
        let env = Env::new().input("x", xv).input("like", f32s(&[rows, 3], 6));
        let want: Vec<f64> = (0..rows).flat_map(|_| row.clone()).collect();
        assert_close("expand_as", &eval(&g, &env, "e"), &[rows, 3], &want, 0.0);
        let want: Vec<f64> = (0..2).flat_map(|_| row.clone()).collect();
        assert_close("repeat", &eval(&g, &env, "r"), &[2, 3], &want, 0.0);
    }
}
