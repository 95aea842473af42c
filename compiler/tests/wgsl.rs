//! The WGSL backend's printed shaders: every kernel of representative graphs (a softmax row
//! kernel, a quantized matmul with its epilogue, f16 elementwise code, a scatter, a KV-cache
//! write) compiles to a module naga accepts, and its text is an `insta` snapshot. Whether the
//! shaders compute the right values is tested on a real adapter by the runtime's op and
//! fused-pattern suites (`runtime/tests/cpu_*.rs` run every comparable graph on wgpu too).

use kiln_compiler::backend::wgsl::{compile_kernel, validate, Layout, Target, WgslError};
use kiln_compiler::schedule::schedule;
use kiln_ir::{BinaryOp, DType, Dim, Graph, QuantType, ScatterReduce, Shape, UnaryOp};

/// Every kernel of `g` (scheduled) compiled to WGSL, with its launch size, as one text.
fn wgsl_of(g: &Graph) -> String {
    wgsl_for(g, Target::default())
}

/// [`wgsl_of`] for an adapter offering `target`.
fn wgsl_for(g: &Graph, target: Target) -> String {
    let s = schedule(g).unwrap_or_else(|e| panic!("schedule: {e}"));
    let mut out = String::new();
    for k in &s.kernels {
        let w = compile_kernel(k, &Layout::default(), target).unwrap_or_else(|e| panic!("{e}"));
        out.push_str(&format!(
            "// {} workgroups of {} threads\n{}\n",
            w.workgroups, w.workgroup_size, w.source
        ));
    }
    out
}

fn seq() -> Dim {
    Dim::symbol("seq")
}

fn softmax() -> Graph {
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, Shape::new(vec![seq(), Dim::from(37)]))
        .unwrap();
    let m = g.max(x, &[1], true).unwrap();
    let d = g.sub(x, m).unwrap();
    let e = g.exp(d).unwrap();
    let s = g.sum(e, &[1], true).unwrap();
    let y = g.div(e, s).unwrap();
    g.set_output("y", y).unwrap();
    g
}

#[test]
fn softmax_rows_cooperate() {
    insta::assert_snapshot!(wgsl_of(&softmax()));
}

/// With subgroups the row sum combines per subgroup (the max keeps the tree: NaN).
#[test]
fn softmax_rows_with_subgroups() {
    insta::assert_snapshot!(wgsl_for(&softmax(), Target { subgroups: true }));
}

#[test]
fn quantized_matmul_with_bias_and_silu() {
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, Shape::new(vec![seq(), Dim::from(64)]))
        .unwrap();
    let w = g
        .param("w", DType::Quant(QuantType::Q4_0), Shape::new([96, 64]))
        .unwrap();
    let b = g.param("b", DType::F32, Shape::new([96])).unwrap();
    let y = g.matmul_t(x, w, false, true).unwrap();
    let y = g.add(y, b).unwrap();
    let sig = g.unary(UnaryOp::Neg, y).unwrap();
    let sig = g.exp(sig).unwrap();
    let one = g
        .full(kiln_ir::Scalar::Float(1.0), DType::F32, Shape::new([1]))
        .unwrap();
    let sig = g.add(sig, one).unwrap();
    let y = g.div(y, sig).unwrap();
    g.set_output("y", y).unwrap();
    insta::assert_snapshot!(wgsl_of(&g));
}

#[test]
fn f16_elementwise_stores_half_words_atomically() {
    let mut g = Graph::new();
    let a = g
        .input("a", DType::F16, Shape::new(vec![seq(), Dim::from(5)]))
        .unwrap();
    let b = g.input("b", DType::F16, Shape::new([5])).unwrap();
    let y = g.binary(BinaryOp::Max, a, b).unwrap();
    let y = g.unary(UnaryOp::Tanh, y).unwrap();
    g.set_output("y", y).unwrap();
    insta::assert_snapshot!(wgsl_of(&g));
}

#[test]
fn scatter_add_runs_in_one_workgroup() {
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, Shape::new(vec![seq(), Dim::from(9)]))
        .unwrap();
    let idx = g
        .input("idx", DType::I64, Shape::new(vec![seq(), Dim::from(4)]))
        .unwrap();
    let src = g
        .input("src", DType::F32, Shape::new(vec![seq(), Dim::from(4)]))
        .unwrap();
    let y = g.scatter(x, 1, idx, src, ScatterReduce::Add).unwrap();
    g.set_output("y", y).unwrap();
    insta::assert_snapshot!(wgsl_of(&g));
}

#[test]
fn kv_cache_write_in_place() {
    let mut g = Graph::new();
    let cache = g
        .state("cache", DType::F32, Shape::new([2, 64, 8]))
        .unwrap();
    let new = g
        .input(
            "new",
            DType::F32,
            Shape::new(vec![Dim::from(2), seq(), Dim::from(8)]),
        )
        .unwrap();
    let upd = g.slice_update(cache, new, 1, "past").unwrap();
    g.set_state_update("cache", upd).unwrap();
    insta::assert_snapshot!(wgsl_of(&g));
}

#[test]
fn naga_rejections_are_errors_with_the_source() {
    let err = validate("fn main( {", Target::default()).unwrap_err();
    assert!(!err.is_empty());
    let e = WgslError::Invalid {
        kernel: "k0".into(),
        message: err,
        loop_ir: "kernel k0() {}".into(),
        wgsl: "fn main( {".into(),
    };
    let text = e.to_string();
    assert!(
        text.contains("kernel k0() {}") && text.contains("fn main( {"),
        "{text}"
    );
}
