//! Builds one causal self-attention head as a Kiln IR graph with a symbolic sequence length,
//! prints its text form, and evaluates it with the reference interpreter at two lengths.
//!
//! Run: `cargo run --release -p graph-basics`

use kiln::ir::interp::{run, Env};
use kiln::ir::{BinaryOp, DType, Dim, Graph, NodeId, Scalar, Shape, Tensor};

const DIM: usize = 16;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (graph, _) = attention_head()?;
    println!("{graph}");

    for seq in [3usize, 5] {
        let x = pseudo_random(seq * DIM, 1);
        let mut env = Env::new().input("x", Tensor::from_vec(vec![seq, DIM], x)?);
        for (i, name) in ["wq", "wk", "wv"].into_iter().enumerate() {
            let w = pseudo_random(DIM * DIM, 10 + i as u64);
            env = env.param(name, Tensor::from_vec(vec![DIM, DIM], w)?);
        }
        let out = run(&graph, &env)?;
        let y = out.get("y").ok_or("no output y")?;
        let probs = out.get("attn").ok_or("no output attn")?;
        println!("seq = {seq}: y is {:?} of {}", y.shape(), y.dtype());
        let p = probs.as_slice::<f32>()?;
        for row in p.chunks(seq) {
            let cells: Vec<String> = row.iter().map(|v| format!("{v:.3}")).collect();
            println!("  attention row: [{}]", cells.join(", "));
        }
    }
    Ok(())
}

/// `softmax(q kᵀ / √d + causal mask) v` with `q, k, v = x Wᵀ`.
fn attention_head() -> Result<(Graph, NodeId), kiln::ir::IrError> {
    let mut g = Graph::new();
    let seq = Dim::symbol("seq");
    let x = g.input("x", DType::F32, Shape(vec![seq.clone(), DIM.into()]))?;
    let proj = |g: &mut Graph, name: &str| -> Result<NodeId, kiln::ir::IrError> {
        let w = g.param(name, DType::F32, Shape::new([DIM, DIM]))?;
        g.matmul_t(x, w, false, true)
    };
    let (q, k, v) = (
        proj(&mut g, "wq")?,
        proj(&mut g, "wk")?,
        proj(&mut g, "wv")?,
    );
    let scores = g.matmul_t(q, k, false, true)?;
    let scale = g.scalar(Scalar::Float(1.0 / (DIM as f64).sqrt()), DType::F32)?;
    let scores = g.mul(scores, scale)?;
    // Causal mask: key j is visible from query i when j <= i.
    let square = Shape(vec![seq.clone(), seq]);
    let row = g.iota(0, DType::I64, square.clone())?;
    let col = g.iota(1, DType::I64, square)?;
    let visible = g.binary(BinaryOp::Le, col, row)?;
    let neg_inf = g.scalar(Scalar::Float(f64::NEG_INFINITY), DType::F32)?;
    let scores = g.where_(visible, scores, neg_inf)?;
    // Softmax over keys, written out of primitives.
    let max = g.max(scores, &[1], true)?;
    let shifted = g.sub(scores, max)?;
    let e = g.exp(shifted)?;
    let sum = g.sum(e, &[1], true)?;
    let probs = g.div(e, sum)?;
    let y = g.matmul(probs, v)?;
    g.set_output("y", y)?;
    g.set_output("attn", probs)?;
    Ok((g, y))
}

/// Deterministic values in [-1, 1) (a small linear congruential generator).
fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
