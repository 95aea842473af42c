//! Every rewrite rule, one at a time, checked against the reference interpreter; snapshots of
//! an optimized graph and of the rule stats. (A whole Llama model optimized with the default
//! stages is tested in `tests/tests/llama_compile.rs`.)
//!
//! Each rule test builds a small graph exhibiting the rule's left-hand side (odd sizes, and a
//! symbolic dim `n` bound to 3 and to 7), optimizes it with only that rule, asserts the rule
//! fired, and compares the interpreter's results before and after bit for bit on random
//! inputs that include NaN, infinities and signed zeros. Every rule is exact, so there are no
//! tolerances here.

use kiln_compiler::egraph::rules::{Ctx, Rhs, RuleDef};
use kiln_compiler::egraph::{optimize, OptimizeOptions, Optimized, Stage};
use kiln_ir::interp::{run, Env};
use kiln_ir::{Bindings, DType, Dim, Graph, NodeId, Op, Scalar, Shape, Tensor};

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Mostly values in [-4, 4), with 1 in 8 a special value.
    fn float(&mut self) -> f64 {
        if self.next().is_multiple_of(8) {
            [0.0, -0.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 1e-42]
                [(self.next() % 6) as usize]
        } else {
            self.unit() * 8.0 - 4.0
        }
    }
}

fn random_tensor(rng: &mut Rng, dtype: DType, shape: Vec<usize>, int_hi: i64) -> Tensor {
    let n: usize = shape.iter().product();
    match dtype {
        DType::F32 => Tensor::from_vec(shape, (0..n).map(|_| rng.float() as f32).collect()),
        DType::F64 => Tensor::from_vec(shape, (0..n).map(|_| rng.float()).collect()),
        DType::I32 => Tensor::from_vec(
            shape,
            (0..n)
                .map(|_| (rng.next() % 201) as i32 - 100)
                .collect::<Vec<i32>>(),
        ),
        DType::I64 => Tensor::from_vec(
            shape,
            (0..n)
                .map(|_| (rng.next() % int_hi as u64) as i64)
                .collect::<Vec<i64>>(),
        ),
        other => panic!("no random {other}"),
    }
    .unwrap()
}

/// An environment with random values for every input, param and state of `g`.
fn random_env(g: &Graph, bindings: &[(&str, i64)], seed: u64, int_hi: i64) -> Env {
    let mut b = Bindings::new();
    for (s, v) in bindings {
        b.set(s, *v);
    }
    let mut env = Env::new().with_bindings(&b);
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    for node in g.nodes() {
        let shape = |s: &Shape| -> Vec<usize> {
            s.dims()
                .iter()
                .map(|d| d.eval(&b).unwrap() as usize)
                .collect()
        };
        match &node.op {
            Op::Input {
                name,
                dtype,
                shape: s,
            } => env.set_input(name, random_tensor(&mut rng, *dtype, shape(s), int_hi)),
            Op::Param {
                name,
                dtype,
                shape: s,
            } => env.set_param(name, random_tensor(&mut rng, *dtype, shape(s), int_hi)),
            Op::State {
                name,
                dtype,
                shape: s,
            } => env.set_state(name, random_tensor(&mut rng, *dtype, shape(s), int_hi)),
            _ => {}
        }
    }
    env
}

/// Bit-level equality (any NaN equals any NaN).
fn assert_same(what: &str, a: &Tensor, b: &Tensor) {
    assert_eq!(a.dtype(), b.dtype(), "{what}: dtype");
    assert_eq!(a.shape(), b.shape(), "{what}: shape");
    if a.dtype().is_float() {
        let (x, y) = (a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
        for (i, (u, v)) in x.iter().zip(&y).enumerate() {
            assert!(
                u.to_bits() == v.to_bits() || (u.is_nan() && v.is_nan()),
                "{what}[{i}]: {u:?} vs {v:?}"
            );
        }
    } else {
        assert_eq!(a.to_i64_vec().unwrap(), b.to_i64_vec().unwrap(), "{what}");
    }
}

/// The interpreter gives identical outputs for `a` and `b` on random inputs, for `n = 3`
/// and `n = 7`.
fn assert_equivalent(a: &Graph, b: &Graph) {
    for (seed, n) in [(1, 3), (2, 7)] {
        let env = random_env(a, &[("n", n)], seed, 100);
        let (x, y) = (run(a, &env).unwrap(), run(b, &env).unwrap());
        assert_eq!(x.outputs.len(), y.outputs.len());
        for ((name, t), (name2, u)) in x.outputs.iter().zip(&y.outputs) {
            assert_eq!(name, name2);
            assert_same(&format!("{name} (n = {n})"), t, u);
        }
    }
}

/// Optimizes `g` with only `rule`, checks that it fired and that nothing changed.
fn check(rule: &str, g: &Graph) -> Optimized {
    let opt = optimize(g, &OptimizeOptions::only(&[rule]).unwrap()).unwrap();
    assert!(
        opt.stats.applied(rule) > 0,
        "{rule} did not fire on\n{g}\nstats:\n{}",
        opt.stats
    );
    assert_equivalent(g, &opt.graph);
    opt
}

fn n() -> Dim {
    Dim::symbol("n")
}

fn shape(dims: &[Dim]) -> Shape {
    Shape(dims.to_vec())
}

/// A graph with float inputs `x` and `y` of shape `[n, 17]` (or `dtype`).
fn two_inputs(dtype: DType) -> (Graph, NodeId, NodeId) {
    let mut g = Graph::new();
    let s = shape(&[n(), 17.into()]);
    let x = g.input("x", dtype, s.clone()).unwrap();
    let y = g.input("y", dtype, s).unwrap();
    (g, x, y)
}

fn count(g: &Graph, pred: impl Fn(&Op) -> bool) -> usize {
    g.nodes().iter().filter(|n| pred(&n.op)).count()
}

fn f(v: f64) -> Scalar {
    Scalar::Float(v)
}

fn i(v: i64) -> Scalar {
    Scalar::Int(v)
}

// ---------------------------------------------------------------- algebra

#[test]
fn add_zero() {
    let (mut g, x, _) = two_inputs(DType::F32);
    let z = g.scalar(f(-0.0), DType::F32).unwrap();
    let a = g.add(x, z).unwrap();
    let b = g.add(z, a).unwrap();
    g.set_output("out", b).unwrap();
    let (mut h, xi, _) = two_inputs(DType::I32);
    let zi = g_scalar(&mut h, i(0), DType::I32);
    let s = h.add(zi, xi).unwrap();
    h.set_output("out", s).unwrap();
    for g in [g, h] {
        let opt = check("add-zero", &g);
        assert_eq!(count(&opt.graph, |o| matches!(o, Op::Binary(_))), 0);
    }
}

fn g_scalar(g: &mut Graph, v: Scalar, d: DType) -> NodeId {
    g.scalar(v, d).unwrap()
}

#[test]
fn add_zero_keeps_positive_float_zero() {
    let (mut g, x, _) = two_inputs(DType::F32);
    let z = g.scalar(f(0.0), DType::F32).unwrap();
    let a = g.add(x, z).unwrap();
    g.set_output("out", a).unwrap();
    let opt = optimize(&g, &OptimizeOptions::only(&["add-zero"]).unwrap()).unwrap();
    assert_eq!(opt.stats.applied("add-zero"), 0, "-0 + +0 is +0");
}

#[test]
fn sub_zero() {
    let (mut g, x, _) = two_inputs(DType::F32);
    let z = g.scalar(f(0.0), DType::F32).unwrap();
    let a = g.sub(x, z).unwrap();
    g.set_output("out", a).unwrap();
    check("sub-zero", &g);
}

#[test]
fn mul_one() {
    let (mut g, x, _) = two_inputs(DType::F32);
    let one = g.scalar(f(1.0), DType::F32).unwrap();
    let a = g.mul(one, x).unwrap();
    let b = g.mul(a, one).unwrap();
    g.set_output("out", b).unwrap();
    check("mul-one", &g);
}

#[test]
fn mul_zero_int() {
    let (mut g, x, _) = two_inputs(DType::I32);
    let z = g.scalar(i(0), DType::I32).unwrap();
    let a = g.mul(x, z).unwrap();
    g.set_output("out", a).unwrap();
    let opt = check("mul-zero-int", &g);
    assert_eq!(count(&opt.graph, |o| matches!(o, Op::Binary(_))), 0);
}

#[test]
fn div_one() {
    let (mut g, x, _) = two_inputs(DType::F32);
    let one = g.scalar(f(1.0), DType::F32).unwrap();
    let a = g.div(x, one).unwrap();
    g.set_output("out", a).unwrap();
    check("div-one", &g);
}

#[test]
fn sub_self_int() {
    let (mut g, x, _) = two_inputs(DType::I32);
    let a = g.sub(x, x).unwrap();
    g.set_output("out", a).unwrap();
    check("sub-self-int", &g);
}

#[test]
fn neg_neg() {
    let (mut g, x, _) = two_inputs(DType::F32);
    let a = g.neg(x).unwrap();
    let b = g.neg(a).unwrap();
    g.set_output("out", b).unwrap();
    let opt = check("neg-neg", &g);
    assert_eq!(opt.graph.nodes().len(), 2);
}

#[test]
fn add_neg() {
    let (mut g, x, y) = two_inputs(DType::F32);
    let ny = g.neg(y).unwrap();
    let a = g.add(x, ny).unwrap();
    let b = g.add(ny, x).unwrap();
    g.set_output("a", a).unwrap();
    g.set_output("b", b).unwrap();
    let opt = check("add-neg", &g);
    assert_eq!(count(&opt.graph, |o| matches!(o, Op::Unary(_))), 0);
}

#[test]
fn sub_neg() {
    let (mut g, x, y) = two_inputs(DType::F32);
    let ny = g.neg(y).unwrap();
    let a = g.sub(x, ny).unwrap();
    g.set_output("out", a).unwrap();
    check("sub-neg", &g);
}

#[test]
fn zero_sub() {
    let (mut g, x, _) = two_inputs(DType::F32);
    let z = g.scalar(f(-0.0), DType::F32).unwrap();
    let a = g.sub(z, x).unwrap();
    g.set_output("out", a).unwrap();
    let (mut h, xi, _) = two_inputs(DType::I32);
    let zi = h.scalar(i(0), DType::I32).unwrap();
    let b = h.sub(zi, xi).unwrap();
    h.set_output("out", b).unwrap();
    check("zero-sub", &g);
    check("zero-sub", &h);
}

#[test]
fn fold_unary() {
    let (mut g, x, _) = two_inputs(DType::F32);
    let c = g.scalar(f(0.7), DType::F32).unwrap();
    let e = g.exp(c).unwrap();
    let a = g.add(x, e).unwrap();
    g.set_output("out", a).unwrap();
    let opt = check("fold-unary", &g);
    assert_eq!(count(&opt.graph, |o| matches!(o, Op::Unary(_))), 0);
}

#[test]
fn fold_binary_rounds_as_the_interpreter_and_folds_comparisons() {
    let mut g = Graph::new();
    let s = shape(&[n(), 7.into()]);
    let a = g.full(f(0.1), DType::F32, s.clone()).unwrap();
    let b = g.full(f(0.2), DType::F32, s.clone()).unwrap();
    let sum = g.add(a, b).unwrap();
    let lt = g.lt(a, b).unwrap();
    let ia = g.full(i(120), DType::I32, s.clone()).unwrap();
    let ib = g.full(i(7), DType::I32, s).unwrap();
    let q = g.div(ia, ib).unwrap();
    g.set_output("sum", sum).unwrap();
    g.set_output("lt", lt).unwrap();
    g.set_output("q", q).unwrap();
    let opt = check("fold-binary", &g);
    assert_eq!(count(&opt.graph, |o| matches!(o, Op::Binary(_))), 0);
}

#[test]
fn fold_cast() {
    let (mut g, x, _) = two_inputs(DType::I32);
    let c = g.scalar(f(-3.7), DType::F32).unwrap();
    let ci = g.cast(c, DType::I32).unwrap();
    let a = g.add(x, ci).unwrap();
    g.set_output("out", a).unwrap();
    check("fold-cast", &g);
}

#[test]
fn fold_where() {
    let (mut g, x, y) = two_inputs(DType::F32);
    let t = g.scalar(Scalar::Bool(true), DType::Bool).unwrap();
    let w = g.where_(t, x, y).unwrap();
    let fl = g.scalar(Scalar::Bool(false), DType::Bool).unwrap();
    let v = g.where_(fl, x, y).unwrap();
    g.set_output("w", w).unwrap();
    g.set_output("v", v).unwrap();
    check("fold-where", &g);
}

#[test]
fn div_pow2() {
    let (mut g, x, _) = two_inputs(DType::F32);
    let four = g.scalar(f(4.0), DType::F32).unwrap();
    let quarter = g.scalar(f(-0.25), DType::F32).unwrap();
    let a = g.div(x, four).unwrap();
    let b = g.div(x, quarter).unwrap();
    g.set_output("a", a).unwrap();
    g.set_output("b", b).unwrap();
    let opt = check("div-pow2", &g);
    assert_eq!(
        count(&opt.graph, |o| *o == Op::Binary(kiln_ir::BinaryOp::Div)),
        0
    );
    // Not for 3: 1/3 is rounded.
    let (mut h, x, _) = two_inputs(DType::F32);
    let three = h.scalar(f(3.0), DType::F32).unwrap();
    let c = h.div(x, three).unwrap();
    h.set_output("c", c).unwrap();
    let opt = optimize(&h, &OptimizeOptions::only(&["div-pow2"]).unwrap()).unwrap();
    assert_eq!(opt.stats.applied("div-pow2"), 0);
}

#[test]
fn pow_two() {
    let (mut g, x, _) = two_inputs(DType::F32);
    let two = g.scalar(f(2.0), DType::F32).unwrap();
    let a = g.pow(x, two).unwrap();
    g.set_output("out", a).unwrap();
    check("pow-two", &g);
}

#[test]
fn cast_identity() {
    let (mut g, x, _) = two_inputs(DType::F32);
    let a = g.cast(x, DType::F32).unwrap();
    g.set_output("out", a).unwrap();
    check("cast-identity", &g);
}

#[test]
fn cast_cast() {
    let (mut g, x, _) = two_inputs(DType::I32);
    let a = g.cast(x, DType::I64).unwrap();
    let b = g.cast(a, DType::F32).unwrap();
    g.set_output("out", b).unwrap();
    let opt = check("cast-cast", &g);
    assert_eq!(count(&opt.graph, |o| matches!(o, Op::Cast { .. })), 1);
    // A narrowing inner cast is kept: f32 -> i32 -> f32 truncates.
    let (mut h, x, _) = two_inputs(DType::F32);
    let a = h.cast(x, DType::I32).unwrap();
    let b = h.cast(a, DType::F32).unwrap();
    h.set_output("out", b).unwrap();
    let opt = optimize(&h, &OptimizeOptions::only(&["cast-cast"]).unwrap()).unwrap();
    assert_eq!(opt.stats.applied("cast-cast"), 0);
}

// ---------------------------------------------------------------- movement

fn input3(g: &mut Graph) -> NodeId {
    g.input("x", DType::F32, shape(&[n(), 3.into(), 7.into()]))
        .unwrap()
}

#[test]
fn reshape_reshape() {
    let mut g = Graph::new();
    let x = input3(&mut g);
    let a = g.reshape(x, shape(&[n() * 3, 7.into()])).unwrap();
    let b = g.reshape(a, shape(&[n(), 21.into()])).unwrap();
    g.set_output("out", b).unwrap();
    let opt = check("reshape-reshape", &g);
    assert_eq!(opt.graph.nodes().len(), 2);
}

#[test]
fn reshape_identity() {
    let mut g = Graph::new();
    let x = input3(&mut g);
    let a = g.reshape(x, shape(&[n(), 3.into(), 7.into()])).unwrap();
    let e = g.exp(a).unwrap();
    g.set_output("out", e).unwrap();
    let opt = check("reshape-identity", &g);
    assert_eq!(opt.graph.nodes().len(), 2);
}

#[test]
fn permute_permute() {
    let mut g = Graph::new();
    let x = input3(&mut g);
    let a = g.permute(x, &[1, 2, 0]).unwrap();
    let b = g.permute(a, &[0, 2, 1]).unwrap();
    g.set_output("out", b).unwrap();
    let opt = check("permute-permute", &g);
    assert_eq!(opt.graph.nodes().len(), 2);
    assert_eq!(
        opt.graph.nodes()[1].op,
        Op::Permute {
            perm: vec![1, 0, 2]
        }
    );
}

#[test]
fn permute_identity() {
    let mut g = Graph::new();
    let x = input3(&mut g);
    let a = g.permute(x, &[0, 1, 2]).unwrap();
    let e = g.exp(a).unwrap();
    g.set_output("out", e).unwrap();
    check("permute-identity", &g);
}

#[test]
fn expand_expand() {
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, shape(&[1.into(), 1.into(), 7.into()]))
        .unwrap();
    let a = g.expand(x, shape(&[1.into(), 3.into(), 7.into()])).unwrap();
    let b = g.expand(a, shape(&[n(), 3.into(), 7.into()])).unwrap();
    g.set_output("out", b).unwrap();
    let opt = check("expand-expand", &g);
    assert_eq!(opt.graph.nodes().len(), 2);
}

#[test]
fn expand_identity() {
    let mut g = Graph::new();
    let x = input3(&mut g);
    let a = g.expand(x, shape(&[n(), 3.into(), 7.into()])).unwrap();
    let e = g.exp(a).unwrap();
    g.set_output("out", e).unwrap();
    check("expand-identity", &g);
}

#[test]
fn slice_slice() {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, shape(&[n(), 17.into()])).unwrap();
    let a = g.slice(x, 1, 2, 15, 1).unwrap();
    let b = g.slice(a, 1, 1, 9, 1).unwrap();
    let c = g.slice(x, 0, 1, n(), 1).unwrap();
    let d = g.slice(c, 0, 1, n() - 1, 1).unwrap();
    g.set_output("b", b).unwrap();
    g.set_output("d", d).unwrap();
    let opt = check("slice-slice", &g);
    assert_eq!(count(&opt.graph, |o| matches!(o, Op::Slice { .. })), 2);
}

#[test]
fn slice_identity() {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, shape(&[n(), 17.into()])).unwrap();
    let a = g.slice(x, 0, 0, n(), 1).unwrap();
    let e = g.exp(a).unwrap();
    g.set_output("out", e).unwrap();
    check("slice-identity", &g);
}

#[test]
fn view_through_unary() {
    let mut g = Graph::new();
    let x = input3(&mut g);
    let p = g.permute(x, &[2, 0, 1]).unwrap();
    let e = g.exp(p).unwrap();
    let s = g
        .input("s", DType::F32, shape(&[1.into(), 17.into()]))
        .unwrap();
    let big = g.expand(s, shape(&[n(), 17.into()])).unwrap();
    let t = g.tanh(big).unwrap();
    g.set_output("e", e).unwrap();
    g.set_output("t", t).unwrap();
    let opt = check("view-through-unary", &g);
    // tanh now runs on the 17 elements before the expand.
    let tanh = opt
        .graph
        .nodes()
        .iter()
        .find(|n| n.op == Op::Unary(kiln_ir::UnaryOp::Tanh))
        .unwrap();
    assert_eq!(tanh.ty.shape, shape(&[1.into(), 17.into()]));
}

fn permute_feeds_matmul(g: &Graph) -> bool {
    g.nodes().iter().any(|n| {
        matches!(n.op, Op::MatMul { .. })
            && n.inputs
                .iter()
                .any(|i| matches!(g.node(*i).op, Op::Permute { .. }))
    })
}

#[test]
fn matmul_fold_transpose_b() {
    let mut g = Graph::new();
    let a = g.input("a", DType::F32, shape(&[n(), 7.into()])).unwrap();
    let b = g
        .input("b", DType::F32, shape(&[3.into(), 7.into()]))
        .unwrap();
    let bt = g.permute(b, &[1, 0]).unwrap();
    let y = g.matmul(a, bt).unwrap();
    // Batched, with a permute that also moves a batch axis: [2, 7, n] -> [n, 7, 2]^T.
    let c = g
        .input("c", DType::F32, shape(&[2.into(), 7.into(), n()]))
        .unwrap();
    let ct = g.permute(c, &[2, 0, 1]).unwrap(); // [n, 2, 7]
    let d = g
        .input("d", DType::F32, shape(&[n(), 3.into(), 7.into()]))
        .unwrap();
    let ctt = g_permute(&mut g, ct, &[0, 2, 1]); // [n, 7, 2]
    let z = g.matmul(d, ctt).unwrap();
    g.set_output("y", y).unwrap();
    g.set_output("z", z).unwrap();
    let opt = optimize(
        &g,
        &OptimizeOptions::only(&["matmul-fold-transpose-b", "permute-permute"]).unwrap(),
    )
    .unwrap();
    assert!(opt.stats.applied("matmul-fold-transpose-b") > 0);
    assert_equivalent(&g, &opt.graph);
    assert!(
        !opt.graph.nodes().iter().any(|n| {
            matches!(n.op, Op::MatMul { .. })
                && n.inputs
                    .iter()
                    .any(|i| is_transpose(&opt.graph.node(*i).op))
        }),
        "{}",
        opt.graph
    );
    // The simple case alone: no permute is left at all.
    let mut h = Graph::new();
    let a = h.input("a", DType::F32, shape(&[n(), 7.into()])).unwrap();
    let b = h
        .input("b", DType::F32, shape(&[3.into(), 7.into()]))
        .unwrap();
    let bt = h.permute(b, &[1, 0]).unwrap();
    let y = h.matmul(a, bt).unwrap();
    h.set_output("y", y).unwrap();
    let opt = check("matmul-fold-transpose-b", &h);
    assert!(!permute_feeds_matmul(&opt.graph));
    assert_eq!(count(&opt.graph, |o| matches!(o, Op::Permute { .. })), 0);
}

fn g_permute(g: &mut Graph, x: NodeId, p: &[usize]) -> NodeId {
    g.permute(x, p).unwrap()
}

/// A permute that swaps the last two axes and nothing else.
fn is_transpose(op: &Op) -> bool {
    match op {
        Op::Permute { perm } => {
            let r = perm.len();
            r >= 2
                && perm[r - 2] == r - 1
                && perm[r - 1] == r - 2
                && perm[..r - 2].iter().enumerate().all(|(i, &p)| i == p)
        }
        _ => false,
    }
}

#[test]
fn matmul_fold_transpose_a() {
    let mut g = Graph::new();
    let a = g.input("a", DType::F32, shape(&[7.into(), n()])).unwrap();
    let at = g.permute(a, &[1, 0]).unwrap();
    let b = g
        .input("b", DType::F32, shape(&[7.into(), 3.into()]))
        .unwrap();
    let y = g.matmul_t(at, b, false, false).unwrap();
    g.set_output("y", y).unwrap();
    let opt = check("matmul-fold-transpose-a", &g);
    assert!(!permute_feeds_matmul(&opt.graph));
}

// ---------------------------------------------------------------- merge

/// `x @ W_i^T` for weights `W_i` of `n_i` rows (`[n_i, 17]` params, `Linear` layout).
fn linear(g: &mut Graph, x: NodeId, name: &str, rows: i64) -> NodeId {
    let w = g
        .param(name, DType::F32, shape(&[rows.into(), 17.into()]))
        .unwrap();
    g.matmul_t(x, w, false, true).unwrap()
}

fn matmuls(g: &Graph) -> usize {
    count(g, |o| matches!(o, Op::MatMul { .. }))
}

#[test]
fn matmul_merge_shared_input() {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, shape(&[n(), 17.into()])).unwrap();
    // A second group: `x` with batch dims, the weights shared with the first group.
    let xb = g
        .input("xb", DType::F32, shape(&[2.into(), n(), 17.into()]))
        .unwrap();
    let q = linear(&mut g, x, "q", 3);
    let k = linear(&mut g, x, "k", 5);
    let v = linear(&mut g, x, "v", 7);
    let wq = g.node(q).inputs[1];
    let wv = g.node(v).inputs[1];
    let bq = g.matmul_t(xb, wq, false, true).unwrap();
    let bv = g.matmul_t(xb, wv, false, true).unwrap();
    for (name, id) in [("q", q), ("k", k), ("v", v), ("bq", bq), ("bv", bv)] {
        g.set_output(name, id).unwrap();
    }
    let opt = check("matmul-merge-shared-input", &g);
    assert_eq!(opt.stats.applied("matmul-merge-shared-input"), 5);
    assert_eq!(matmuls(&g), 5);
    assert_eq!(matmuls(&opt.graph), 2, "{}", opt.graph);
    assert_eq!(count(&opt.graph, |o| matches!(o, Op::Concat { .. })), 2);
    // One slice per original product, at offsets 0, 3, 8 (and 0, 3) of the last axis.
    let mut slices: Vec<(usize, Dim, Dim)> = opt
        .graph
        .nodes()
        .iter()
        .filter_map(|nd| match &nd.op {
            Op::Slice {
                axis, start, end, ..
            } => Some((*axis, start.clone(), end.clone())),
            _ => None,
        })
        .collect();
    slices.sort_by_key(|(a, s, _)| (*a, s.as_const()));
    let want: Vec<(usize, Dim, Dim)> = [(1, 0, 3), (1, 3, 8), (1, 8, 15), (2, 0, 3), (2, 3, 10)]
        .iter()
        .map(|&(a, s, e)| (a, Dim::constant(s), Dim::constant(e)))
        .collect();
    assert_eq!(slices, want);
}

#[test]
fn matmul_merge_needs_a_shared_input_and_plain_param_weights() {
    // Different `a`; a weight that is an input, not a param; `trans_b = false`; a
    // block-quantized weight next to a float one (different dtypes); and two block-quantized
    // weights (not merged: `concat` takes no quantized operands).
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, shape(&[n(), 32.into()])).unwrap();
    let y = g.input("y", DType::F32, shape(&[n(), 32.into()])).unwrap();
    let a = linear32(&mut g, x, "a", DType::F32);
    let b = linear32(&mut g, y, "b", DType::F32);
    let wi = g
        .input("wi", DType::F32, shape(&[5.into(), 32.into()]))
        .unwrap();
    let c = g.matmul_t(y, wi, false, true).unwrap();
    let wt = g
        .param("wt", DType::F32, shape(&[32.into(), 5.into()]))
        .unwrap();
    let d = g.matmul_t(x, wt, false, false).unwrap();
    let z = g.input("z", DType::F32, shape(&[n(), 32.into()])).unwrap();
    let e = linear32(&mut g, z, "e", DType::F32);
    let q8 = DType::Quant(kiln_ir::QuantType::Q8_0);
    let f_ = linear32(&mut g, z, "f", q8);
    let f2 = linear32(&mut g, z, "f2", q8);
    let outs = [
        ("a", a),
        ("b", b),
        ("c", c),
        ("d", d),
        ("e", e),
        ("f", f_),
        ("f2", f2),
    ];
    for (name, id) in outs {
        g.set_output(name, id).unwrap();
    }
    let opt = optimize(
        &g,
        &OptimizeOptions::only(&["matmul-merge-shared-input"]).unwrap(),
    )
    .unwrap();
    assert_eq!(opt.stats.applied("matmul-merge-shared-input"), 0);
    assert_eq!(matmuls(&opt.graph), 7);
}

fn linear32(g: &mut Graph, x: NodeId, name: &str, dtype: DType) -> NodeId {
    let w = g.param(name, dtype, shape(&[3.into(), 32.into()])).unwrap();
    g.matmul_t(x, w, false, true).unwrap()
}

// ---------------------------------------------------------------- machinery

/// A deliberately wrong rule (`exp x == cast<f64> x`) must be caught when it merges classes
/// of different types.
#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "changes a type")]
fn a_rule_that_changes_a_type_is_loud_in_debug_builds() {
    fn bad(ctx: &Ctx, node: &kiln_compiler::egraph::lang::KNode, op: &Op) -> Vec<Rhs> {
        let _ = ctx;
        match op {
            Op::Unary(kiln_ir::UnaryOp::Exp) => {
                vec![Rhs::node(Op::Cast { to: DType::F64 }, &[node.children[0]])]
            }
            _ => vec![],
        }
    }
    let (mut g, x, _) = two_inputs(DType::F32);
    let e = g.exp(x).unwrap();
    g.set_output("out", e).unwrap();
    let options = OptimizeOptions {
        stages: vec![Stage {
            name: "bad".into(),
            rules: vec![RuleDef::new("bad", bad)],
        }],
        ..OptimizeOptions::default()
    };
    let _ = optimize(&g, &options);
}

#[test]
fn unknown_rule_names_are_errors() {
    assert!(OptimizeOptions::only(&["no-such-rule"]).is_err());
}

#[test]
fn every_rule_has_a_unique_name() {
    let mut names: Vec<&str> = kiln_compiler::egraph::rules::all()
        .iter()
        .map(|r| r.name)
        .collect();
    let len = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), len);
}

/// A small graph exercising both stages; its optimized text and the stats are snapshots.
fn small_graph() -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, shape(&[n(), 8.into()])).unwrap();
    let w = g
        .param("w", DType::F32, shape(&[16.into(), 8.into()]))
        .unwrap();
    let wt = g.permute(w, &[1, 0]).unwrap();
    let h = g.matmul(x, wt).unwrap();
    let half = g.scalar(f(2.0), DType::F32).unwrap();
    let h = g.div(h, half).unwrap();
    let one = g.scalar(f(1.0), DType::F32).unwrap();
    let h = g.mul(h, one).unwrap();
    let nh = g.neg(h).unwrap();
    let nnh = g.neg(nh).unwrap();
    let r = g.reshape(nnh, shape(&[n(), 4.into(), 4.into()])).unwrap();
    let r = g.reshape(r, shape(&[n(), 16.into()])).unwrap();
    g.set_output("y", r).unwrap();
    g
}

#[test]
fn snapshot_small_graph_and_stats() {
    let g = small_graph();
    let opt = optimize(&g, &OptimizeOptions::default()).unwrap();
    assert_equivalent(&g, &opt.graph);
    insta::assert_snapshot!("small_graph_optimized", opt.graph.to_string());
    insta::assert_snapshot!("small_graph_stats", opt.stats.to_string());
    // Deterministic: the same again.
    let again = optimize(&g, &OptimizeOptions::default()).unwrap();
    assert_eq!(again.graph, opt.graph);
    assert_eq!(again.stats, opt.stats);
}
