//! The fixed graph compiled ahead of time (shared by `build.rs` and the crate).
//!
//! A small classifier over one symbolic dimension `n` (rows): an embedding lookup of
//! `(ids * 7 + 3) mod V` (integer arithmetic and a data-dependent gather) added to the scaled
//! input (a multi-element constant), a weight-normalized first layer (`w1 * g1`, computed
//! once at load time), three matmul + bias + GELU (tanh form) layers, the last two the same
//! kernel over other buffers, a classifier with softmax and an argmax.

use kiln_ir::{DType, Dim, Graph, IrError, NodeId, Scalar, Shape, Tensor};

/// The symbol prefix of the kernels in the object.
pub const PREFIX: &str = "kiln_aot_mlp";
/// Input features.
pub const D: usize = 16;
/// Hidden width.
pub const H: usize = 32;
/// Classes.
pub const C: usize = 10;
/// Embedding rows.
pub const V: usize = 50;

fn f32s(g: &mut Graph, v: f64) -> Result<NodeId, IrError> {
    g.scalar(Scalar::Float(v), DType::F32)
}

/// `0.5 h (1 + tanh(sqrt(2/pi) (h + 0.044715 h^3)))`.
fn gelu(g: &mut Graph, h: NodeId) -> Result<NodeId, IrError> {
    let h3 = g.mul(h, h)?;
    let h3 = g.mul(h3, h)?;
    let k = f32s(g, 0.044715)?;
    let t = g.mul(h3, k)?;
    let t = g.add(h, t)?;
    let s = f32s(g, (2.0 / std::f64::consts::PI).sqrt())?;
    let t = g.mul(t, s)?;
    let t = g.tanh(t)?;
    let one = f32s(g, 1.0)?;
    let t = g.add(t, one)?;
    let half = f32s(g, 0.5)?;
    let h = g.mul(h, half)?;
    g.mul(h, t)
}

/// `gelu(x @ w^T + b)`.
fn layer(g: &mut Graph, x: NodeId, w: NodeId, b: NodeId) -> Result<NodeId, IrError> {
    let y = g.matmul_t(x, w, false, true)?;
    let y = g.add(y, b)?;
    gelu(g, y)
}

fn build(g: &mut Graph) -> Result<(), IrError> {
    let n = Dim::from("n");
    let x = g.input("x", DType::F32, Shape::new([n.clone(), Dim::from(D)]))?;
    let ids = g.input("ids", DType::I32, Shape::new([n]))?;
    let emb = g.param("emb", DType::F32, Shape::new([V, D]))?;
    let seven = g.scalar(Scalar::Int(7), DType::I32)?;
    let three = g.scalar(Scalar::Int(3), DType::I32)?;
    let rows = g.scalar(Scalar::Int(V as i64), DType::I32)?;
    let idx = g.mul(ids, seven)?;
    let idx = g.add(idx, three)?;
    let idx = g.modulo(idx, rows)?;
    g.set_output("idx", idx)?;
    let e = g.index_select(emb, 0, idx)?;
    let scale: Vec<f32> = (0..D).map(|i| 0.5 + i as f32 / D as f32).collect();
    let scale = g.constant(Tensor::from_vec(vec![D], scale).expect("D values"))?;
    let x = g.mul(x, scale)?;
    let x = g.add(x, e)?;

    let w1 = g.param("w1", DType::F32, Shape::new([H, D]))?;
    let g1 = g.param("g1", DType::F32, Shape::new([H, 1]))?;
    let w1 = g.mul(w1, g1)?;
    let b1 = g.param("b1", DType::F32, Shape::new([H]))?;
    let mut h = layer(g, x, w1, b1)?;
    for l in ["a", "b"] {
        let w = g.param(&format!("w{l}"), DType::F32, Shape::new([H, H]))?;
        let b = g.param(&format!("b{l}"), DType::F32, Shape::new([H]))?;
        h = layer(g, h, w, b)?;
    }
    let w2 = g.param("w2", DType::F32, Shape::new([C, H]))?;
    let b2 = g.param("b2", DType::F32, Shape::new([C]))?;
    let logits = g.matmul_t(h, w2, false, true)?;
    let logits = g.add(logits, b2)?;
    let m = g.max(logits, &[1], true)?;
    let z = g.sub(logits, m)?;
    let z = g.exp(z)?;
    let s = g.sum(z, &[1], true)?;
    let probs = g.div(z, s)?;
    g.set_output("probs", probs)?;
    let best = g.argmax(probs, 1, false)?;
    g.set_output("best", best)?;
    Ok(())
}

/// The graph: inputs `x: f32[n, D]` and `ids: i32[n]`; params `emb`, `w1`, `g1`, `b1`,
/// `wa`, `ba`, `wb`, `bb`, `w2`, `b2`; outputs `idx: i32[n]`, `probs: f32[n, C]` and
/// `best` (the argmax of `probs`).
pub fn graph() -> Graph {
    let mut g = Graph::new();
    build(&mut g).expect("the fixed graph is well-typed");
    g
}
