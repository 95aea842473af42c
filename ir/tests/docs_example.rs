//! The worked example of `docs/ir.md`, kept compiling and true.

use kiln_ir::interp::{run, Env};
use kiln_ir::{BinaryOp, DType, Dim, Graph, Scalar, Shape, Tensor};

#[test]
fn worked_example_of_docs_ir_md() -> Result<(), Box<dyn std::error::Error>> {
    let mut g = Graph::new();
    let seq = Dim::symbol("seq");
    let x = g.input("x", DType::F32, Shape(vec![seq.clone(), 16.into()]))?;
    let wq = g.param("wq", DType::F32, Shape::new([16, 16]))?;
    let wk = g.param("wk", DType::F32, Shape::new([16, 16]))?;
    let q = g.matmul_t(x, wq, false, true)?;
    let k = g.matmul_t(x, wk, false, true)?;
    let scores = g.matmul_t(q, k, false, true)?;
    let square = Shape(vec![seq.clone(), seq]);
    let row = g.iota(0, DType::I64, square.clone())?;
    let col = g.iota(1, DType::I64, square)?;
    let visible = g.binary(BinaryOp::Le, col, row)?;
    let neg_inf = g.scalar(Scalar::Float(f64::NEG_INFINITY), DType::F32)?;
    let scores = g.where_(visible, scores, neg_inf)?;
    let max = g.max(scores, &[1], true)?;
    let e = g.sub(scores, max)?;
    let e = g.exp(e)?;
    let sum = g.sum(e, &[1], true)?;
    let probs = g.div(e, sum)?;
    g.set_output("attn", probs)?;

    let printed = g.to_string();
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/ir.md"))?;
    let start = doc
        .find("graph {\n  %0 = input \"x\" : f32[seq, 16]")
        .expect("docs/ir.md shows the printed graph");
    let block = &doc[start..doc[start..].find("```").map(|e| start + e).unwrap()];
    assert_eq!(
        block.trim_end(),
        printed.trim_end(),
        "docs/ir.md's printed graph is out of date"
    );

    for n in [3usize, 5] {
        let env = Env::new()
            .input("x", Tensor::from_vec(vec![n, 16], vec![0.1f32; n * 16])?)
            .param("wq", Tensor::from_vec(vec![16, 16], vec![0.01f32; 256])?)
            .param("wk", Tensor::from_vec(vec![16, 16], vec![0.02f32; 256])?);
        let out = run(&g, &env)?;
        let attn = out.get("attn").unwrap();
        assert_eq!(attn.shape(), &[n, n]);
        // Equal scores: each row spreads evenly over the visible keys.
        let p = attn.as_slice::<f32>()?;
        assert!((p[n] - 0.5).abs() < 1e-6 && p[1] == 0.0);
    }
    Ok(())
}
