//! The scheduler against the reference interpreter: each graph is run by
//! `kiln_ir::interp::run` and by the scheduled kernels on the loop-IR evaluator, and the
//! results must be bit-identical (the loop IR rounds at exactly the interpreter's op
//! boundaries, so no tolerance is needed).

use kiln_compiler::loop_ir::KernelKind;
use kiln_compiler::schedule::{run as run_schedule, schedule, Feeds, Schedule};
use kiln_ir::interp::{run, Env};
use kiln_ir::{
    BinaryOp, DType, Dim, Graph, QuantType, ReduceOp, Scalar, ScatterReduce, Shape, Tensor, UnaryOp,
};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64) / ((1u64 << 53) as f64)
    }
    fn f32s(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| (self.next() * 4.0 - 2.0) as f32).collect()
    }
}

fn bits(t: &Tensor) -> Vec<u64> {
    match t.dtype() {
        DType::Bool => t
            .as_slice::<bool>()
            .unwrap()
            .iter()
            .map(|&b| b as u64)
            .collect(),
        d if d.is_float() => t
            .to_f64_vec()
            .unwrap()
            .iter()
            .map(|v| {
                if v.is_nan() {
                    1 << 63 | 0x7ff8
                } else {
                    v.to_bits()
                }
            })
            .collect(),
        _ => t.to_i64_vec().unwrap().iter().map(|&v| v as u64).collect(),
    }
}

/// Runs both and compares; `tensors` are (kind, name, tensor) with kind i/p/s.
fn check(g: &Graph, tensors: &[(char, &str, Tensor)], binds: &[(&str, i64)]) -> Schedule {
    let s = schedule(g).unwrap_or_else(|e| panic!("schedule: {e}"));
    let mut env = Env::new();
    let mut feeds = Feeds::new();
    for (k, n, t) in tensors {
        match k {
            'i' => {
                env.set_input(n, t.clone());
                feeds = feeds.input(n, t.clone());
            }
            'p' => {
                env.set_param(n, t.clone());
                feeds = feeds.param(n, t.clone());
            }
            _ => {
                env.set_state(n, t.clone());
                feeds = feeds.state(n, t.clone());
            }
        }
    }
    for (sym, v) in binds {
        env.set_binding(sym, *v);
        feeds = feeds.bind(sym, *v);
    }
    let want = run(g, &env).unwrap_or_else(|e| panic!("interp: {e}"));
    let (outs, states) =
        run_schedule(&s, &feeds).unwrap_or_else(|e| panic!("loop ir: {e}\n{}", dump(&s)));
    for ((n, a), (_, b)) in want
        .outputs
        .iter()
        .zip(&outs)
        .chain(want.states.iter().zip(&states))
    {
        assert_eq!(a.shape(), b.shape(), "{n}");
        assert_eq!(bits(a), bits(b), "{n}: {a:?} vs {b:?}\n{}", dump(&s));
    }
    s
}

fn dump(s: &Schedule) -> String {
    s.kernels.iter().map(|k| k.to_string()).collect()
}

fn t(shape: Vec<usize>, v: Vec<f32>) -> Tensor {
    Tensor::from_vec(shape, v).unwrap()
}

const SIZES: [usize; 4] = [1, 3, 7, 17];

#[test]
fn every_unary_and_binary_op_fused_into_one_kernel() {
    for op in UnaryOp::ALL
        .into_iter()
        .filter(|u| u.float_only() || *u != UnaryOp::Not)
    {
        if op == UnaryOp::Not {
            continue;
        }
        let mut g = Graph::new();
        let x = g
            .input("x", DType::F32, Shape::new([Dim::from("n"), Dim::from(3)]))
            .unwrap();
        let y = g.unary(op, x).unwrap();
        let h = g
            .full(
                Scalar::Float(0.5),
                DType::F16,
                Shape::new([Dim::from("n"), Dim::from(3)]),
            )
            .unwrap();
        let y16 = g.cast(y, DType::F16).unwrap();
        let z = g.mul(y16, h).unwrap();
        g.set_output("z", z).unwrap();
        for n in [1, 7] {
            let mut r = Rng(n as u64 + 1);
            let s = check(
                &g,
                &[('i', "x", t(vec![n, 3], r.f32s(n * 3)))],
                &[("n", n as i64)],
            );
            assert_eq!(s.kernels.len(), 1, "{op:?}");
        }
    }
    for op in BinaryOp::ALL.into_iter().filter(|b| !b.is_logical()) {
        let mut g = Graph::new();
        let x = g.input("x", DType::F32, Shape::new(["n"])).unwrap();
        let y = g.input("y", DType::F32, Shape::new([1])).unwrap();
        let z = g.binary(op, x, y).unwrap();
        g.set_output("z", z).unwrap();
        for n in SIZES {
            let mut r = Rng(n as u64);
            let s = check(
                &g,
                &[
                    ('i', "x", t(vec![n], r.f32s(n))),
                    ('i', "y", t(vec![1], r.f32s(1))),
                ],
                &[],
            );
            assert_eq!(s.kernels.len(), 1);
        }
    }
    // Integer and bool ops, where, casts, iota.
    let mut g = Graph::new();
    let a = g.input("a", DType::I32, Shape::new(["n"])).unwrap();
    let i = g.iota(0, DType::I32, Shape::new(["n"])).unwrap();
    let d = g.binary(BinaryOp::Div, a, i).unwrap();
    let m = g.binary(BinaryOp::Mod, a, i).unwrap();
    let x = g.binary(BinaryOp::Xor, d, m).unwrap();
    let c = g.binary(BinaryOp::Lt, x, a).unwrap();
    let nc = g.unary(UnaryOp::Not, c).unwrap();
    let w = g.where_(nc, d, m).unwrap();
    let f = g.cast(w, DType::BF16).unwrap();
    g.set_output("f", f).unwrap();
    for n in SIZES {
        let v: Vec<i32> = (0..n as i32).map(|k| k * 7919 - 40).collect();
        check(
            &g,
            &[('i', "a", Tensor::from_vec(vec![n], v).unwrap())],
            &[],
        );
    }
}

#[test]
fn views_are_index_arithmetic() {
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, Shape::new([Dim::from("n"), Dim::from(6)]))
        .unwrap();
    let r = g
        .reshape(x, Shape::new([Dim::from("n"), Dim::from(2), Dim::from(3)]))
        .unwrap();
    let p = g.permute(r, &[2, 0, 1]).unwrap();
    let s = g.slice(p, 0, 1, 3, 1).unwrap();
    let f = g.flip(s, &[1]).unwrap();
    let pd = g
        .pad(
            f,
            vec![
                (Dim::from(1), Dim::from(0)),
                (Dim::from(0), Dim::from(2)),
                (Dim::from(1), Dim::from(1)),
            ],
            Scalar::Float(-1.5),
        )
        .unwrap();
    let e = g.exp(pd).unwrap();
    let c = g.concat(&[e, pd], 1).unwrap();
    g.set_output("c", c).unwrap();
    let xr = g
        .reshape(x, Shape::new([Dim::from(6), Dim::from("n")]))
        .unwrap();
    g.set_output("xr", xr).unwrap();
    for n in SIZES {
        let mut rng = Rng(3);
        let s = check(&g, &[('i', "x", t(vec![n, 6], rng.f32s(n * 6)))], &[]);
        assert_eq!(s.kernels.len(), 2);
    }
}

#[test]
fn every_reduction_at_odd_sizes() {
    for op in ReduceOp::ALL {
        for keep in [false, true] {
            let mut g = Graph::new();
            let x = g
                .input("x", DType::F32, Shape::new([Dim::from(3), Dim::from("n")]))
                .unwrap();
            let sq = g.mul(x, x).unwrap();
            let axes: &[usize] = if op == ReduceOp::ArgMax {
                &[1]
            } else {
                &[0, 1]
            };
            let r = g.reduce(op, sq, axes, keep).unwrap();
            g.set_output("r", r).unwrap();
            let r1 = g
                .reduce(
                    if op == ReduceOp::ArgMax {
                        ReduceOp::Max
                    } else {
                        op
                    },
                    x,
                    &[0],
                    keep,
                )
                .unwrap();
            g.set_output("r1", r1).unwrap();
            for n in SIZES {
                let mut rng = Rng(n as u64 * 5);
                let s = check(&g, &[('i', "x", t(vec![3, n], rng.f32s(3 * n)))], &[]);
                assert_eq!(s.kernels.len(), 2, "{op:?}: square fused as prologue");
            }
        }
    }
}

fn softmax(g: &mut Graph, x: kiln_ir::NodeId) -> kiln_ir::NodeId {
    let m = g.max(x, &[1], true).unwrap();
    let d = g.sub(x, m).unwrap();
    let e = g.exp(d).unwrap();
    let s = g.sum(e, &[1], true).unwrap();
    g.div(e, s).unwrap()
}

fn rms_norm(g: &mut Graph, x: kiln_ir::NodeId, w: kiln_ir::NodeId, dim: usize) -> kiln_ir::NodeId {
    let sq = g.mul(x, x).unwrap();
    let s = g.sum(sq, &[1], true).unwrap();
    let inv = g
        .scalar(Scalar::Float(1.0 / dim as f64), DType::F32)
        .unwrap();
    let mean = g.mul(s, inv).unwrap();
    let eps = g.scalar(Scalar::Float(1e-5), DType::F32).unwrap();
    let me = g.add(mean, eps).unwrap();
    let r = g.rsqrt(me).unwrap();
    let y = g.mul(x, r).unwrap();
    g.mul(y, w).unwrap()
}

#[test]
fn softmax_is_one_kernel() {
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, Shape::new([Dim::from("n"), Dim::from(7)]))
        .unwrap();
    let y = softmax(&mut g, x);
    g.set_output("y", y).unwrap();
    let mut s = None;
    for n in SIZES {
        let mut rng = Rng(11);
        s = Some(check(
            &g,
            &[('i', "x", t(vec![n, 7], rng.f32s(n * 7)))],
            &[],
        ));
    }
    let s = s.unwrap();
    assert_eq!(s.kernels.len(), 1);
    assert_eq!(s.kernels[0].kind, KernelKind::Reduction);
    insta::assert_snapshot!("softmax_kernel", s.kernels[0].to_string());
}

/// The CPU backend's phase-value reuse (`loop_ir::reuse`): the softmax kernel's sum phase
/// stores its exps into the output row and the normalizing loop reads them back (one `exp`
/// per element), with bit-identical results on the loop-IR evaluator; an RMSNorm, whose
/// shared value (`x`) is a plain load, is left alone.
#[test]
fn softmax_sum_phase_stores_its_exps_for_the_normalizing_loop() {
    use kiln_compiler::loop_ir::reuse::forward_phase_values;
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, Shape::new([Dim::from("n"), Dim::from(7)]))
        .unwrap();
    let y = softmax(&mut g, x);
    g.set_output("y", y).unwrap();
    let s = schedule(&g).unwrap();
    let reused = forward_phase_values(&s.kernels[0]).expect("the exp is reused");
    let text = reused.to_string();
    assert_eq!(text.matches("exp.").count(), 1, "{text}");
    insta::assert_snapshot!("softmax_kernel_reused", text);
    let mut s2 = s.clone();
    s2.kernels[0] = reused;
    for n in SIZES {
        let mut rng = Rng(17);
        let feeds = Feeds::new().input("x", t(vec![n, 7], rng.f32s(n * 7)));
        let (a, _) = run_schedule(&s, &feeds).unwrap();
        let (b, _) = run_schedule(&s2, &feeds).unwrap();
        let bits = |o: &[(String, Tensor)]| -> Vec<u32> {
            o[0].1
                .as_slice::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        assert_eq!(bits(&a), bits(&b), "n = {n}");
    }

    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, Shape::new([Dim::from("n"), Dim::from(8)]))
        .unwrap();
    let w = g
        .param("w", DType::F32, Shape::new([Dim::from(8)]))
        .unwrap();
    let y = rms_norm(&mut g, x, w, 8);
    g.set_output("y", y).unwrap();
    let s = schedule(&g).unwrap();
    for k in &s.kernels {
        assert!(forward_phase_values(k).is_none(), "{k}");
    }
}

/// Softmax as attention computes it: a leading batch axis of extent 1 (a broadcast of the
/// row max reads it at index 0, the row loop at its variable), the fully-masked-row guard
/// `where(max == -inf, 0, max)` using the max twice, and the sum guarded the same way.
#[test]
fn guarded_softmax_over_a_unit_batch_axis_is_one_kernel() {
    let mut g = Graph::new();
    let shape = Shape::new([Dim::from(1), Dim::from("n"), Dim::from(7)]);
    let x = g.input("x", DType::F32, shape.clone()).unwrap();
    // Mask the upper triangle (row i keeps keys <= i - 1, so row 0 is fully masked).
    let rows = Shape::new([Dim::from("n"), Dim::from(7)]);
    let i = g.iota(0, DType::I64, rows.clone()).unwrap();
    let j = g.iota(1, DType::I64, rows).unwrap();
    let one = g.scalar(Scalar::Int(1), DType::I64).unwrap();
    let i1 = g.sub(i, one).unwrap();
    let keep = g.le(j, i1).unwrap();
    let ninf = g
        .scalar(Scalar::Float(f64::NEG_INFINITY), DType::F32)
        .unwrap();
    let xm = g.where_(keep, x, ninf).unwrap();
    let m = g.max(xm, &[2], true).unwrap();
    let is_ninf = g.binary(BinaryOp::Eq, m, ninf).unwrap();
    let zero = g.scalar(Scalar::Float(0.0), DType::F32).unwrap();
    let m = g.where_(is_ninf, zero, m).unwrap();
    let mx = g.expand(m, shape.clone()).unwrap();
    let d = g.sub(xm, mx).unwrap();
    let e = g.exp(d).unwrap();
    let s = g.sum(e, &[2], true).unwrap();
    let is_zero = g.binary(BinaryOp::Eq, s, zero).unwrap();
    let onef = g.scalar(Scalar::Float(1.0), DType::F32).unwrap();
    let s = g.where_(is_zero, onef, s).unwrap();
    let sx = g.expand(s, shape).unwrap();
    let y = g.div(e, sx).unwrap();
    g.set_output("y", y).unwrap();
    for n in SIZES {
        let mut rng = Rng(13);
        let s = check(&g, &[('i', "x", t(vec![1, n, 7], rng.f32s(n * 7)))], &[]);
        assert_eq!(s.kernels.len(), 1, "{}", dump(&s));
        assert_eq!(s.kernels[0].kind, KernelKind::Reduction);
        assert_eq!(s.kernels[0].to_string().matches("declare acc").count(), 2);
    }
}

/// RMSNorm over `[1, n, d]` with the mean of squares broadcast back by an explicit expand.
#[test]
fn rms_norm_with_an_expanded_row_value_is_one_kernel() {
    let mut g = Graph::new();
    let shape = Shape::new([Dim::from(1), Dim::from("n"), Dim::from(8)]);
    let x = g.input("x", DType::F32, shape.clone()).unwrap();
    let w = g.param("w", DType::F32, Shape::new([8])).unwrap();
    let sq = g.mul(x, x).unwrap();
    let s = g.sum(sq, &[2], true).unwrap();
    let inv = g.scalar(Scalar::Float(0.125), DType::F32).unwrap();
    let mean = g.mul(s, inv).unwrap();
    let eps = g.scalar(Scalar::Float(1e-5), DType::F32).unwrap();
    let me = g.add(mean, eps).unwrap();
    let r = g.rsqrt(me).unwrap();
    let rx = g.expand(r, shape).unwrap();
    let y = g.mul(x, rx).unwrap();
    let y = g.mul(y, w).unwrap();
    g.set_output("y", y).unwrap();
    let mut rng = Rng(21);
    let wt = t(vec![8], rng.f32s(8));
    for n in SIZES {
        let s = check(
            &g,
            &[
                ('i', "x", t(vec![1, n, 8], rng.f32s(n * 8))),
                ('p', "w", wt.clone()),
            ],
            &[],
        );
        assert_eq!(s.kernels.len(), 1, "{}", dump(&s));
        assert_eq!(s.kernels[0].kind, KernelKind::Reduction);
    }
}

#[test]
fn rms_norm_and_layer_norm_are_one_kernel() {
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, Shape::new([Dim::from("n"), Dim::from(8)]))
        .unwrap();
    let w = g.param("w", DType::F32, Shape::new([8])).unwrap();
    let y = rms_norm(&mut g, x, w, 8);
    g.set_output("y", y).unwrap();
    let mut rng = Rng(5);
    let wt = t(vec![8], rng.f32s(8));
    for n in SIZES {
        let s = check(
            &g,
            &[
                ('i', "x", t(vec![n, 8], rng.f32s(n * 8))),
                ('p', "w", wt.clone()),
            ],
            &[],
        );
        assert_eq!(s.kernels.len(), 1);
        if n == 3 {
            insta::assert_snapshot!("rms_norm_kernel", s.kernels[0].to_string());
        }
    }
    // LayerNorm: mean, centered variance, normalize, scale and shift.
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, Shape::new([Dim::from("n"), Dim::from(8)]))
        .unwrap();
    let w = g.param("w", DType::F32, Shape::new([8])).unwrap();
    let b = g.param("b", DType::F32, Shape::new([8])).unwrap();
    let inv = g.scalar(Scalar::Float(0.125), DType::F32).unwrap();
    let s = g.sum(x, &[1], true).unwrap();
    let mean = g.mul(s, inv).unwrap();
    let c = g.sub(x, mean).unwrap();
    let c2 = g.mul(c, c).unwrap();
    let v = g.sum(c2, &[1], true).unwrap();
    let var = g.mul(v, inv).unwrap();
    let eps = g.scalar(Scalar::Float(1e-5), DType::F32).unwrap();
    let ve = g.add(var, eps).unwrap();
    let r = g.rsqrt(ve).unwrap();
    let y = g.mul(c, r).unwrap();
    let y = g.mul(y, w).unwrap();
    let y = g.add(y, b).unwrap();
    g.set_output("y", y).unwrap();
    let bt = t(vec![8], rng.f32s(8));
    for n in SIZES {
        let s = check(
            &g,
            &[
                ('i', "x", t(vec![n, 8], rng.f32s(n * 8))),
                ('p', "w", wt.clone()),
                ('p', "b", bt.clone()),
            ],
            &[],
        );
        assert_eq!(s.kernels.len(), 1);
    }
}

#[test]
fn matmul_with_bias_activation_residual_is_one_kernel() {
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, Shape::new([Dim::from("n"), Dim::from(5)]))
        .unwrap();
    let w = g.param("w", DType::F32, Shape::new([3, 5])).unwrap();
    let b = g.param("b", DType::F32, Shape::new([3])).unwrap();
    let res = g
        .input(
            "res",
            DType::F32,
            Shape::new([Dim::from("n"), Dim::from(3)]),
        )
        .unwrap();
    let mm = g.matmul_t(x, w, false, true).unwrap();
    let y = g.add(mm, b).unwrap();
    let y = g.tanh(y).unwrap();
    let y = g.add(y, res).unwrap();
    let half = g.scalar(Scalar::Float(0.5), DType::F32).unwrap();
    let y = g.mul(y, half).unwrap();
    g.set_output("y", y).unwrap();
    let mut rng = Rng(9);
    let (wt, bt) = (t(vec![3, 5], rng.f32s(15)), t(vec![3], rng.f32s(3)));
    for n in SIZES {
        let s = check(
            &g,
            &[
                ('i', "x", t(vec![n, 5], rng.f32s(n * 5))),
                ('p', "w", wt.clone()),
                ('p', "b", bt.clone()),
                ('i', "res", t(vec![n, 3], rng.f32s(n * 3))),
            ],
            &[],
        );
        assert_eq!(s.kernels.len(), 1);
        assert_eq!(s.kernels[0].kind, KernelKind::MatMul);
        if n == 3 {
            insta::assert_snapshot!("matmul_epilogue_kernel", s.kernels[0].to_string());
        }
    }
}

/// Causal attention scores: `softmax(where(k > q + past, -inf, (q @ k^T) * scale))`. The
/// softmax needs the scores stored, and the scale and mask, used only on the way to the
/// softmax, are stored with them: they run once in the product's epilogue, and the softmax
/// kernel only loads (it would otherwise recompute the mask and scale in each of its three
/// loops). Two kernels, matching the interpreter bit for bit at odd and symbolic sizes.
#[test]
fn masked_scores_store_their_mask_and_scale_in_the_product_epilogue() {
    let mut g = Graph::new();
    let sq = Dim::from("seq");
    let q = g
        .input("q", DType::F32, Shape::new([sq.clone(), Dim::from(8)]))
        .unwrap();
    let kv = Dim::from("past") + sq.clone();
    let k = g
        .input("k", DType::F32, Shape::new([kv.clone(), Dim::from(8)]))
        .unwrap();
    let scores = g.matmul_t(q, k, false, true).unwrap();
    let scale = g.scalar(Scalar::Float(0.125), DType::F32).unwrap();
    let scores = g.mul(scores, scale).unwrap();
    let rows = g
        .iota(0, DType::I64, Shape::new([sq.clone(), kv.clone()]))
        .unwrap();
    let cols = g
        .iota(1, DType::I64, Shape::new([sq.clone(), kv.clone()]))
        .unwrap();
    let past = g.dim_value(Dim::from("past"), DType::I64).unwrap();
    let limit = g.add(rows, past).unwrap();
    let masked = g.binary(BinaryOp::Gt, cols, limit).unwrap();
    let ninf = g
        .scalar(Scalar::Float(f64::NEG_INFINITY), DType::F32)
        .unwrap();
    let scores = g.where_(masked, ninf, scores).unwrap();
    let y = softmax(&mut g, scores);
    g.set_output("y", y).unwrap();
    let mut rng = Rng(21);
    for (seq, past) in [(1, 0), (3, 0), (5, 2), (1, 6)] {
        let s = check(
            &g,
            &[
                ('i', "q", t(vec![seq, 8], rng.f32s(seq * 8))),
                ('i', "k", t(vec![past + seq, 8], rng.f32s((past + seq) * 8))),
            ],
            &[("past", past as i64)],
        );
        let kinds: Vec<KernelKind> = s.kernels.iter().map(|k| k.kind).collect();
        assert_eq!(
            kinds,
            [KernelKind::MatMul, KernelKind::Reduction],
            "{}",
            dump(&s)
        );
        if (seq, past) == (5, 2) {
            insta::assert_snapshot!("masked_scores_kernels", dump(&s));
        }
    }
}

/// An elementwise value read only by one matmul's operand (a rotate-half RoPE before the
/// scores `q @ k^T`) is recomputed in that matmul's prologue instead of being stored by a
/// kernel of its own; read by two matmul kernels it stays stored.
#[test]
fn elementwise_operand_fuses_as_matmul_prologue() {
    let mut g = Graph::new();
    let shape = Shape::new([Dim::from("n"), Dim::from(4)]);
    let q = g.input("q", DType::F32, shape.clone()).unwrap();
    let k = g.input("k", DType::F32, shape.clone()).unwrap();
    let c = g.param("c", DType::F32, Shape::new([4])).unwrap();
    let rope = |g: &mut Graph, x| {
        let lo = g.slice(x, 1, Dim::from(0), Dim::from(2), 1).unwrap();
        let hi = g.slice(x, 1, Dim::from(2), Dim::from(4), 1).unwrap();
        let nh = g.neg(hi).unwrap();
        let rot = g.concat(&[nh, lo], 1).unwrap();
        let a = g.mul(x, c).unwrap();
        let s = g.sin(c).unwrap();
        let b = g.mul(rot, s).unwrap();
        g.add(a, b).unwrap()
    };
    let (qr, kr) = (rope(&mut g, q), rope(&mut g, k));
    let scores = g.matmul_t(qr, kr, false, true).unwrap();
    g.set_output("s", scores).unwrap();
    let mut rng = Rng(17);
    let ct = t(vec![4], rng.f32s(4));
    for n in SIZES {
        let s = check(
            &g,
            &[
                ('i', "q", t(vec![n, 4], rng.f32s(n * 4))),
                ('i', "k", t(vec![n, 4], rng.f32s(n * 4))),
                ('p', "c", ct.clone()),
            ],
            &[],
        );
        // sin(c) is params-only: a load-time kernel. Per run: the one scores kernel.
        assert_eq!(s.launches.len(), 1, "{}", dump(&s));
        assert_eq!(s.kernels[s.launches[0].kernel].kind, KernelKind::MatMul);
    }
    // The same scaled input feeding two projections: stored once, read by both.
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, shape).unwrap();
    let w1 = g.param("w1", DType::F32, Shape::new([3, 4])).unwrap();
    let w2 = g.param("w2", DType::F32, Shape::new([5, 4])).unwrap();
    let two = g.scalar(Scalar::Float(2.0), DType::F32).unwrap();
    let y = g.mul(x, two).unwrap();
    let a = g.matmul_t(y, w1, false, true).unwrap();
    let b = g.matmul_t(y, w2, false, true).unwrap();
    g.set_output("a", a).unwrap();
    g.set_output("b", b).unwrap();
    let (w1t, w2t) = (t(vec![3, 4], rng.f32s(12)), t(vec![5, 4], rng.f32s(20)));
    for n in SIZES {
        let s = check(
            &g,
            &[
                ('i', "x", t(vec![n, 4], rng.f32s(n * 4))),
                ('p', "w1", w1t.clone()),
                ('p', "w2", w2t.clone()),
            ],
            &[],
        );
        assert_eq!(s.kernels.len(), 3, "{}", dump(&s));
    }
}

fn quant_blocks(q: QuantType, rows: usize, k: usize, rng: &mut Rng) -> Tensor {
    let nblocks = rows * k / q.block_size();
    let mut bytes = Vec::new();
    for _ in 0..nblocks {
        let d = half::f16::from_f32(0.01 + rng.next() as f32 * 0.05).to_le_bytes();
        bytes.extend_from_slice(&d);
        for _ in 2..q.block_bytes() {
            bytes.push((rng.next() * 256.0) as u8);
        }
    }
    Tensor::quantized(q, vec![rows, k], bytes).unwrap()
}

#[test]
fn matmul_with_quantized_and_f16_weights_dequantizes_in_the_prologue() {
    for q in [QuantType::Q4_0, QuantType::Q8_0] {
        let mut g = Graph::new();
        let x = g
            .input("x", DType::F32, Shape::new([Dim::from("n"), Dim::from(64)]))
            .unwrap();
        let w = g.param("w", DType::Quant(q), Shape::new([3, 64])).unwrap();
        let mm = g.matmul_t(x, w, false, true).unwrap();
        let y = g.silu_like(mm);
        g.set_output("y", y).unwrap();
        let mut rng = Rng(21);
        let wt = quant_blocks(q, 3, 64, &mut rng);
        for n in [1, 3] {
            let s = check(
                &g,
                &[
                    ('i', "x", t(vec![n, 64], rng.f32s(n * 64))),
                    ('p', "w", wt.clone()),
                ],
                &[],
            );
            assert_eq!(s.kernels.len(), 1);
            assert!(s.kernels[0].to_string().contains("dequant."));
        }
    }
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, Shape::new([Dim::from("n"), Dim::from(4)]))
        .unwrap();
    let w = g.param("w", DType::F16, Shape::new([4, 3])).unwrap();
    let wf = g.cast(w, DType::F32).unwrap();
    let mm = g.matmul(x, wf).unwrap();
    g.set_output("y", mm).unwrap();
    let mut rng = Rng(2);
    let w16: Vec<half::f16> = rng.f32s(12).into_iter().map(half::f16::from_f32).collect();
    for n in SIZES {
        let s = check(
            &g,
            &[
                ('i', "x", t(vec![n, 4], rng.f32s(n * 4))),
                ('p', "w", Tensor::from_vec(vec![4, 3], w16.clone()).unwrap()),
            ],
            &[],
        );
        assert_eq!(s.kernels.len(), 1);
    }
}

trait SiluLike {
    fn silu_like(&mut self, x: kiln_ir::NodeId) -> kiln_ir::NodeId;
}
impl SiluLike for Graph {
    fn silu_like(&mut self, x: kiln_ir::NodeId) -> kiln_ir::NodeId {
        let n = self.neg(x).unwrap();
        let e = self.exp(n).unwrap();
        let one = self.scalar(Scalar::Float(1.0), DType::F32).unwrap();
        let d = self.add(e, one).unwrap();
        self.div(x, d).unwrap()
    }
}

#[test]
fn indexing_ops_and_state_updates() {
    let mut g = Graph::new();
    let emb = g.param("emb", DType::F32, Shape::new([5, 4])).unwrap();
    let ids = g.input("ids", DType::I64, Shape::new(["n"])).unwrap();
    let e = g.index_select(emb, 0, ids).unwrap();
    g.set_output("e", e).unwrap();
    let gi = g
        .input("gi", DType::I64, Shape::new([Dim::from("n"), Dim::from(2)]))
        .unwrap();
    let ga = g.gather(e, 1, gi).unwrap();
    g.set_output("ga", ga).unwrap();
    let z = g
        .full(Scalar::Float(0.25), DType::F32, Shape::new([5, 4]))
        .unwrap();
    let sc = g.scatter(z, 0, gi, ga, ScatterReduce::Add).unwrap();
    let sc2 = g.scatter(z, 0, gi, ga, ScatterReduce::Assign).unwrap();
    g.set_output("sc", sc).unwrap();
    g.set_output("sc2", sc2).unwrap();
    let cache = g.state("cache", DType::F32, Shape::new([8, 4])).unwrap();
    let upd = g.slice_update(cache, e, 0, "past").unwrap();
    g.set_state_update("cache", upd).unwrap();
    let mut rng = Rng(4);
    for n in SIZES.into_iter().filter(|&n| n <= 5) {
        let ids: Vec<i64> = (0..n as i64).map(|i| (i * 3) % 5).collect();
        let gis: Vec<i64> = (0..2 * n as i64).map(|i| (i * 7 + 1) % 4).collect();
        check(
            &g,
            &[
                ('p', "emb", t(vec![5, 4], rng.f32s(20))),
                ('i', "ids", Tensor::from_vec(vec![n], ids).unwrap()),
                ('i', "gi", Tensor::from_vec(vec![n, 2], gis).unwrap()),
                ('s', "cache", t(vec![8, 4], rng.f32s(32))),
            ],
            &[("past", 2)],
        );
    }
}

/// A KV-cache-like state: `cache [8, 4]` takes `x [n, 4] * 2` at row `past`, and the
/// output reads the first `past + n` rows of the new value. `extra` adds more readers.
fn cache_graph(extra: impl FnOnce(&mut Graph, kiln_ir::NodeId, kiln_ir::NodeId)) -> Graph {
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, Shape::new([Dim::from("n"), Dim::from(4)]))
        .unwrap();
    let cache = g.state("cache", DType::F32, Shape::new([8, 4])).unwrap();
    let two = g.scalar(Scalar::Float(2.0), DType::F32).unwrap();
    let x2 = g.mul(x, two).unwrap();
    let upd = g.slice_update(cache, x2, 0, "past").unwrap();
    g.set_state_update("cache", upd).unwrap();
    let end = Dim::from("past") + Dim::from("n");
    let seen = g.slice(upd, 0, 0, end, 1).unwrap();
    let y = g.exp(seen).unwrap();
    g.set_output("y", y).unwrap();
    extra(&mut g, cache, upd);
    g
}

fn check_cache(g: &Graph) -> Schedule {
    let mut rng = Rng(41);
    let mut s = None;
    for (n, past) in [(3, 0), (1, 3), (2, 6)] {
        s = Some(check(
            g,
            &[
                ('i', "x", t(vec![n, 4], rng.f32s(4 * n))),
                ('s', "cache", t(vec![8, 4], rng.f32s(32))),
            ],
            &[("past", past)],
        ));
    }
    s.unwrap()
}

#[test]
fn kv_cache_update_is_in_place() {
    let g = cache_graph(|_, _, _| {});
    let s = check_cache(&g);
    assert!(s.updated_in_place("cache"), "{}", dump(&s));
    // No output buffer for the new value: the update kernel writes the state, the reader
    // reads it, and the only output buffer is `y`'s.
    let outputs = s
        .buffers
        .iter()
        .filter(|b| b.kind == kiln_compiler::schedule::BufferKind::Output);
    assert_eq!(outputs.count(), 1);
    let update = s
        .kernels
        .iter()
        .find(|k| k.name.contains("slice_update"))
        .expect("an update kernel");
    insta::assert_snapshot!("kv_cache_update_in_place", update.to_string());
}

/// The old value read after the write (by a kernel launched after the update) forbids the
/// in-place update; read before it (the state itself as an output, copied first), or the new
/// value as an output, does not.
#[test]
fn kv_cache_update_in_place_only_when_the_old_value_is_dead() {
    let late = cache_graph(|g, cache, _| {
        let old = g.neg(cache).unwrap();
        g.set_output("old", old).unwrap();
    });
    let s = check_cache(&late);
    assert!(!s.updated_in_place("cache"), "{}", dump(&s));

    let early = cache_graph(|g, cache, upd| {
        g.set_output("old", cache).unwrap();
        g.set_output("new", upd).unwrap();
    });
    let s = check_cache(&early);
    assert!(s.updated_in_place("cache"), "{}", dump(&s));

    // The written rows come from the old value itself: not in place.
    let mut g = Graph::new();
    let cache = g.state("cache", DType::F32, Shape::new([8, 4])).unwrap();
    let head = g.slice(cache, 0, 0, 2, 1).unwrap();
    let upd = g.slice_update(cache, head, 0, "past").unwrap();
    g.set_state_update("cache", upd).unwrap();
    let mut rng = Rng(42);
    for past in [0, 3, 6] {
        let s = check(
            &g,
            &[('s', "cache", t(vec![8, 4], rng.f32s(32)))],
            &[("past", past)],
        );
        assert!(!s.updated_in_place("cache"), "{}", dump(&s));
    }
}

#[test]
fn params_only_work_runs_at_load_time() {
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, Shape::new([Dim::from("n"), Dim::from(3)]))
        .unwrap();
    let w = g.param("w", DType::F32, Shape::new([3, 2])).unwrap();
    let v = g.param("v", DType::F32, Shape::new([3, 2])).unwrap();
    let wt = g.concat(&[w, v], 1).unwrap();
    let wt = g.permute(wt, &[1, 0]).unwrap();
    let y = g.matmul_t(x, wt, false, true).unwrap();
    g.set_output("y", y).unwrap();
    let mut rng = Rng(8);
    let s = check(
        &g,
        &[
            ('i', "x", t(vec![3, 3], rng.f32s(9))),
            ('p', "w", t(vec![3, 2], rng.f32s(6))),
            ('p', "v", t(vec![3, 2], rng.f32s(6))),
        ],
        &[],
    );
    assert_eq!(s.load_time.len(), 1);
    assert_eq!(s.launches.len(), 1);
}

#[test]
fn sliced_merged_product_is_one_kernel_with_two_phases() {
    // `silu(x @ Wg^T) * (x @ Wu^T)` after merging: one product with the concatenated weights,
    // sliced apart again. One kernel whose row has the slice width: two contraction phases
    // (columns `j` and `j + I` of the merged weight) and the SiLU-gate epilogue.
    let (k, i) = (5, 7);
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, Shape::new([Dim::from("n"), Dim::from(k)]))
        .unwrap();
    let wg = g.param("wg", DType::F32, Shape::new([i, k])).unwrap();
    let wu = g.param("wu", DType::F32, Shape::new([i, k])).unwrap();
    let w = g.concat(&[wg, wu], 0).unwrap();
    let m = g.matmul_t(x, w, false, true).unwrap();
    let gate = g.slice(m, 1, Dim::from(0), Dim::from(i), 1).unwrap();
    let up = g.slice(m, 1, Dim::from(i), Dim::from(2 * i), 1).unwrap();
    let ng = g.neg(gate).unwrap();
    let e = g.exp(ng).unwrap();
    let one = g.scalar(Scalar::Float(1.0), DType::F32).unwrap();
    let d = g.add(e, one).unwrap();
    let silu = g.div(gate, d).unwrap();
    let y = g.mul(silu, up).unwrap();
    g.set_output("y", y).unwrap();
    let mut rng = Rng(29);
    let (wgt, wut) = (
        t(vec![i, k], rng.f32s(i * k)),
        t(vec![i, k], rng.f32s(i * k)),
    );
    for n in [3, 17] {
        let s = check(
            &g,
            &[
                ('i', "x", t(vec![n, k], rng.f32s(n * k))),
                ('p', "wg", wgt.clone()),
                ('p', "wu", wut.clone()),
            ],
            &[("n", n as i64)],
        );
        // The weight concat runs at load time; per run, the one fused matmul kernel.
        assert_eq!(s.launches.len(), 1, "{}", dump(&s));
        let kernel = &s.kernels[s.launches[0].kernel];
        assert_eq!(kernel.kind, KernelKind::MatMul, "{}", dump(&s));
        let text = kernel.to_string();
        assert!(text.contains("exp"), "{text}");
        // Nothing but the output `[n, I]` is stored per run.
        let stored: Vec<_> = s
            .buffers
            .iter()
            .filter(|b| b.kind == kiln_compiler::schedule::BufferKind::Intermediate)
            .collect();
        assert!(stored.is_empty(), "{}", dump(&s));
    }
    // A product also read whole is stored; its slices are read back from memory.
    let mut g2 = g.clone();
    g2.set_output("m", m).unwrap();
    let s = check(
        &g2,
        &[
            ('i', "x", t(vec![4, k], rng.f32s(4 * k))),
            ('p', "wg", wgt.clone()),
            ('p', "wu", wut.clone()),
        ],
        &[("n", 4)],
    );
    assert_eq!(s.launches.len(), 2, "{}", dump(&s));
}
