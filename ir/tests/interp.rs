//! The reference interpreter: symbolic dims bound to several values, state updates, the
//! errors (exact variants and fields), and no panics for any bindings.

use kiln_ir::interp::{run, run_nodes, Env, EvalError, DEFAULT_MAX_ELEMENTS};
use kiln_ir::{Bindings, DType, Dim, DimError, Graph, NodeId, Scalar, Shape, Tensor};

fn f32s(shape: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

fn i64s(shape: &[usize], v: Vec<i64>) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

fn sym(s: &str) -> Dim {
    Dim::parse(s).unwrap()
}

/// A shape from dim expressions (`"seq"`, `"4"`, `"n + 1"`).
fn shp(dims: &[&str]) -> Shape {
    Shape(dims.iter().map(|d| sym(d)).collect())
}

/// `y = (x @ w) * scale + iota(seq)[:, None]`, `last = y[seq - 1]`, `total = sum(y, 0)`.
fn symbolic_graph() -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, shp(&["seq", "4"])).unwrap();
    let w = g.param("w", DType::F32, Shape::new([4, 3])).unwrap();
    let xw = g.matmul(x, w).unwrap();
    let scale = g.scalar(Scalar::Float(0.5), DType::F32).unwrap();
    let scaled = g.mul(xw, scale).unwrap();
    let pos = g.iota(0, DType::F32, shp(&["seq", "1"])).unwrap();
    let y = g.add(scaled, pos).unwrap();
    let last = g.slice(y, 0, sym("seq - 1"), "seq", 1).unwrap();
    let total = g.sum(y, &[0], false).unwrap();
    g.set_output("y", y).unwrap();
    g.set_output("last", last).unwrap();
    g.set_output("total", total).unwrap();
    g
}

#[test]
fn one_graph_many_sequence_lengths() {
    let g = symbolic_graph();
    let w: Vec<f32> = (0..12).map(|i| i as f32 * 0.25 - 1.0).collect();
    for seq in [1usize, 3, 17] {
        let x: Vec<f32> = (0..seq * 4).map(|i| (i % 7) as f32 - 3.0).collect();
        let env = Env::new()
            .input("x", f32s(&[seq, 4], x.clone()))
            .param("w", f32s(&[4, 3], w.clone()));
        let out = run(&g, &env).unwrap();
        assert_eq!(out.bindings.get("seq"), Some(seq as i64));
        // Reference by hand (every value here is exact in f32).
        let mut y = vec![0f32; seq * 3];
        for i in 0..seq {
            for j in 0..3 {
                let dot: f32 = (0..4).map(|k| x[i * 4 + k] * w[k * 3 + j]).sum();
                y[i * 3 + j] = dot * 0.5 + i as f32;
            }
        }
        let total: Vec<f32> = (0..3)
            .map(|j| (0..seq).map(|i| y[i * 3 + j]).sum())
            .collect();
        assert_eq!(out.get("y").unwrap(), &f32s(&[seq, 3], y.clone()));
        assert_eq!(
            out.get("last").unwrap(),
            &f32s(&[1, 3], y[(seq - 1) * 3..].to_vec())
        );
        assert_eq!(out.get("total").unwrap(), &f32s(&[3], total));
        assert!(out.states.is_empty());
    }
}

/// A KV-cache-like state: `cache[past .. past + seq] = new`, output the filled prefix.
fn cache_graph() -> Graph {
    let mut g = Graph::new();
    let cache = g.state("cache", DType::F32, Shape::new([8, 2])).unwrap();
    let new = g.input("new", DType::F32, shp(&["seq", "2"])).unwrap();
    let updated = g.slice_update(cache, new, 0, "past").unwrap();
    let filled = g.slice(updated, 0, 0, sym("past + seq"), 1).unwrap();
    g.set_state_update("cache", updated).unwrap();
    g.set_output("filled", filled).unwrap();
    g
}

#[test]
fn state_updates_are_returned_and_can_be_fed_back() {
    let g = cache_graph();
    let mut cache = f32s(&[8, 2], vec![0.0; 16]);
    let mut expected = vec![0f32; 16];
    let mut past = 0usize;
    for (step, seq) in [3usize, 1, 4].into_iter().enumerate() {
        let new: Vec<f32> = (0..seq * 2).map(|i| (step * 100 + i) as f32).collect();
        expected[past * 2..(past + seq) * 2].copy_from_slice(&new);
        let env = Env::new()
            .state("cache", cache)
            .input("new", f32s(&[seq, 2], new))
            .bind("past", past as i64);
        let out = run(&g, &env).unwrap();
        past += seq;
        assert_eq!(out.states.len(), 1);
        assert_eq!(out.states[0].0, "cache");
        assert_eq!(
            out.state("cache").unwrap(),
            &f32s(&[8, 2], expected.clone())
        );
        assert_eq!(
            out.get("filled").unwrap(),
            &f32s(&[past, 2], expected[..past * 2].to_vec())
        );
        cache = out.state("cache").unwrap().clone();
    }
    // A fourth step of 2 would write past the end: 8 + 2 > 8.
    let env = Env::new()
        .state("cache", cache)
        .input("new", f32s(&[2, 2], vec![0.0; 4]))
        .bind("past", past as i64);
    assert_eq!(
        run(&g, &env).unwrap_err(),
        EvalError::Bounds {
            node: NodeId(2),
            op: "slice_update".into(),
            axis: 0,
            start: 8,
            end: 10,
            size: 8,
        }
    );
}

#[test]
fn only_needed_nodes_are_evaluated() {
    let mut g = Graph::new();
    let x = g.input("x", DType::I64, Shape::new([3])).unwrap();
    // Neither `unused` nor the out-of-bounds gather feeds an output.
    let unused = g.input("unused", DType::F32, Shape::new([2])).unwrap();
    let _ = g.neg(unused).unwrap();
    let c = g.constant(i64s(&[2], vec![10, 20])).unwrap();
    let bad_idx = g.constant(i64s(&[2], vec![5, 0])).unwrap();
    let _ = g.gather(c, 0, bad_idx).unwrap();
    let y = g.add(x, x).unwrap();
    g.set_output("y", y).unwrap();
    let out = run(&g, &Env::new().input("x", i64s(&[3], vec![1, 2, 3]))).unwrap();
    assert_eq!(out.get("y").unwrap(), &i64s(&[3], vec![2, 4, 6]));
}

#[test]
fn run_nodes_evaluates_intermediate_nodes() {
    let g = symbolic_graph();
    let env = Env::new()
        .input("x", f32s(&[1, 4], vec![1.0, 0.0, 0.0, 0.0]))
        .param("w", f32s(&[4, 3], (0..12).map(|i| i as f32).collect()));
    // Node 2 is the matmul.
    let v = run_nodes(&g, &env, &[NodeId(2), NodeId(0)]).unwrap();
    assert_eq!(v[0], f32s(&[1, 3], vec![0.0, 1.0, 2.0]));
    assert_eq!(v[1], f32s(&[1, 4], vec![1.0, 0.0, 0.0, 0.0]));
    let n = g.nodes().len();
    assert_eq!(
        run_nodes(&g, &env, &[NodeId(99)]).unwrap_err(),
        EvalError::UnknownNode {
            node: NodeId(99),
            len: n
        }
    );
}

#[test]
fn missing_input_param_and_state() {
    let g = symbolic_graph();
    let err = run(&g, &Env::new()).unwrap_err();
    assert_eq!(
        err,
        EvalError::Missing {
            node: NodeId(0),
            op: "input".into(),
            name: "x".into()
        }
    );
    assert_eq!(err.to_string(), "%0 (input): no tensor given for input `x`");
    let env = Env::new().input("x", f32s(&[2, 4], vec![0.0; 8]));
    assert_eq!(
        run(&g, &env).unwrap_err(),
        EvalError::Missing {
            node: NodeId(1),
            op: "param".into(),
            name: "w".into()
        }
    );
    let env = Env::new()
        .input("new", f32s(&[1, 2], vec![0.0; 2]))
        .bind("past", 0);
    assert_eq!(
        run(&cache_graph(), &env).unwrap_err(),
        EvalError::Missing {
            node: NodeId(0),
            op: "state".into(),
            name: "cache".into()
        }
    );
}

#[test]
fn wrong_dtype() {
    let g = symbolic_graph();
    let env = Env::new().input("x", i64s(&[2, 4], vec![0; 8]));
    assert_eq!(
        run(&g, &env).unwrap_err(),
        EvalError::DType {
            node: NodeId(0),
            op: "input".into(),
            name: "x".into(),
            expected: DType::F32,
            actual: DType::I64,
        }
    );
}

#[test]
fn shape_mismatch_against_a_binding() {
    let g = symbolic_graph();
    let w = f32s(&[4, 3], vec![0.0; 12]);
    // An explicit binding wins over the input's shape.
    let env = Env::new()
        .input("x", f32s(&[5, 4], vec![0.0; 20]))
        .param("w", w.clone())
        .bind("seq", 3);
    let err = run(&g, &env).unwrap_err();
    assert_eq!(
        err,
        EvalError::Shape {
            node: NodeId(0),
            op: "input".into(),
            name: "x".into(),
            expected: shp(&["seq", "4"]),
            bindings: Bindings::new().with("seq", 3),
            actual: vec![5, 4],
        }
    );
    assert_eq!(
        err.to_string(),
        "%0 (input): input `x` has shape [5, 4], the graph expects [seq, 4] with {seq=3}"
    );
    // A constant dim that differs, and a wrong rank.
    let env = Env::new()
        .input("x", f32s(&[2, 5], vec![0.0; 10]))
        .param("w", w.clone());
    assert!(matches!(
        run(&g, &env).unwrap_err(),
        EvalError::Shape { name, actual, .. } if name == "x" && actual == vec![2, 5]
    ));
    let env = Env::new()
        .input("x", f32s(&[8], vec![0.0; 8]))
        .param("w", w);
    assert!(matches!(
        run(&g, &env).unwrap_err(),
        EvalError::Shape { name, actual, .. } if name == "x" && actual == vec![8]
    ));
}

#[test]
fn two_inputs_disagree_on_a_symbol() {
    let mut g = Graph::new();
    let a = g.input("a", DType::F32, Shape::new(["n"])).unwrap();
    let b = g.input("b", DType::F32, Shape::new(["n"])).unwrap();
    let s = g.add(a, b).unwrap();
    g.set_output("s", s).unwrap();
    let env = Env::new()
        .input("a", f32s(&[3], vec![0.0; 3]))
        .input("b", f32s(&[4], vec![0.0; 4]));
    assert_eq!(
        run(&g, &env).unwrap_err(),
        EvalError::Shape {
            node: NodeId(1),
            op: "input".into(),
            name: "b".into(),
            expected: Shape::new(["n"]),
            bindings: Bindings::new().with("n", 3),
            actual: vec![4],
        }
    );
}

#[test]
fn compound_dims_are_checked_after_binding() {
    let mut g = Graph::new();
    let a = g.input("a", DType::F32, Shape::new(["n"])).unwrap();
    let b = g.input("b", DType::F32, Shape(vec![sym("n + 1")])).unwrap();
    let ab = g.concat(&[a, b], 0).unwrap();
    g.set_output("ab", ab).unwrap();
    let ok = Env::new()
        .input("a", f32s(&[1], vec![1.0]))
        .input("b", f32s(&[2], vec![2.0, 3.0]));
    assert_eq!(
        run(&g, &ok).unwrap().get("ab").unwrap(),
        &f32s(&[3], vec![1.0, 2.0, 3.0])
    );
    let bad = Env::new()
        .input("a", f32s(&[1], vec![1.0]))
        .input("b", f32s(&[3], vec![2.0, 3.0, 4.0]));
    assert!(matches!(
        run(&g, &bad).unwrap_err(),
        EvalError::Shape { node: NodeId(1), name, .. } if name == "b"
    ));
    // Without `a`, nothing binds `n` (a compound dim binds nothing).
    let mut g2 = Graph::new();
    let b = g2
        .input("b", DType::F32, Shape(vec![sym("n + 1")]))
        .unwrap();
    g2.set_output("b", b).unwrap();
    let err = run(&g2, &Env::new().input("b", f32s(&[2], vec![0.0; 2]))).unwrap_err();
    assert_eq!(
        err,
        EvalError::Dim {
            node: NodeId(0),
            op: "input".into(),
            source: DimError::Unbound {
                symbol: "n".into(),
                dim: "n + 1".into()
            },
        }
    );
}

#[test]
fn gather_and_index_select_out_of_bounds() {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, Shape::new([2, 3])).unwrap();
    let idx = g.input("idx", DType::I64, Shape::new([2, 2])).unwrap();
    let y = g.gather(x, 1, idx).unwrap();
    g.set_output("y", y).unwrap();
    let env = Env::new()
        .input("x", f32s(&[2, 3], vec![0.0; 6]))
        .input("idx", i64s(&[2, 2], vec![0, 2, 7, 1]));
    let err = run(&g, &env).unwrap_err();
    assert_eq!(
        err,
        EvalError::IndexOutOfBounds {
            node: NodeId(2),
            op: "gather".into(),
            index: 7,
            axis: 1,
            size: 3,
        }
    );
    assert_eq!(
        err.to_string(),
        "%2 (gather): index 7 is out of bounds for axis 1 of size 3"
    );

    let mut g = Graph::new();
    let x = g.input("x", DType::F32, Shape::new([2, 3])).unwrap();
    let idx = g.input("idx", DType::I32, Shape::new(["k"])).unwrap();
    let y = g.index_select(x, 0, idx).unwrap();
    g.set_output("y", y).unwrap();
    let env = Env::new()
        .input("x", f32s(&[2, 3], vec![0.0; 6]))
        .input("idx", Tensor::from_vec(vec![2], vec![1i32, -1]).unwrap());
    assert_eq!(
        run(&g, &env).unwrap_err(),
        EvalError::IndexOutOfBounds {
            node: NodeId(2),
            op: "index_select".into(),
            index: -1,
            axis: 0,
            size: 2,
        }
    );
}

#[test]
fn scatter_out_of_bounds_and_oversized_indices() {
    let mut g = Graph::new();
    let dst = g.input("dst", DType::I32, shp(&["n", "3"])).unwrap();
    let idx = g.input("idx", DType::I64, shp(&["m", "1"])).unwrap();
    let src = g.input("src", DType::I32, shp(&["m", "1"])).unwrap();
    let y = g
        .scatter(dst, 1, idx, src, kiln_ir::ScatterReduce::Add)
        .unwrap();
    g.set_output("y", y).unwrap();
    let i32s = |s: &[usize], v: Vec<i32>| Tensor::from_vec(s.to_vec(), v).unwrap();
    let env = |m: usize, idx: Vec<i64>| {
        Env::new()
            .input("dst", i32s(&[2, 3], vec![0; 6]))
            .input("idx", i64s(&[m, 1], idx))
            .input("src", i32s(&[m, 1], vec![1; m]))
    };
    let out = run(&g, &env(2, vec![2, 2])).unwrap();
    assert_eq!(
        out.get("y").unwrap(),
        &i32s(&[2, 3], vec![0, 0, 1, 0, 0, 1])
    );
    assert_eq!(
        run(&g, &env(2, vec![0, 3])).unwrap_err(),
        EvalError::IndexOutOfBounds {
            node: NodeId(3),
            op: "scatter".into(),
            index: 3,
            axis: 1,
            size: 3,
        }
    );
    // Three rows of indices for a destination of two rows: fine symbolically (m vs n).
    assert_eq!(
        run(&g, &env(3, vec![0, 0, 0])).unwrap_err(),
        EvalError::OperandShape {
            node: NodeId(3),
            op: "scatter".into(),
            shapes: vec![vec![2, 3], vec![3, 1]],
            expected: "indices of the operand's rank, no larger on any axis but 1".into(),
        }
    );
}

#[test]
fn slice_bounds_after_binding() {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, Shape::new(["n"])).unwrap();
    let y = g.slice(x, 0, "s", "e", 2).unwrap();
    g.set_output("y", y).unwrap();
    let env = |s: i64, e: i64| {
        Env::new()
            .input("x", f32s(&[5], vec![0.0, 1.0, 2.0, 3.0, 4.0]))
            .bind("s", s)
            .bind("e", e)
    };
    assert_eq!(
        run(&g, &env(1, 5)).unwrap().get("y").unwrap(),
        &f32s(&[2], vec![1.0, 3.0])
    );
    assert_eq!(
        run(&g, &env(5, 5)).unwrap().get("y").unwrap(),
        &f32s(&[0], vec![])
    );
    for (s, e) in [(2, 10), (-1, 3), (4, 2), (6, 6)] {
        assert_eq!(
            run(&g, &env(s, e)).unwrap_err(),
            EvalError::Bounds {
                node: NodeId(1),
                op: "slice".into(),
                axis: 0,
                start: s,
                end: e,
                size: 5,
            },
            "{s}..{e}"
        );
    }
    let err = run(&g, &env(2, 10)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "%1 (slice): range 2..10 on axis 0 of size 5 breaks 0 <= start <= end <= size"
    );
    // slice_update with a negative start.
    let mut g = Graph::new();
    let d = g.input("d", DType::F32, Shape::new([4])).unwrap();
    let s = g.input("s", DType::F32, Shape::new([1])).unwrap();
    let u = g.slice_update(d, s, 0, "p").unwrap();
    g.set_output("u", u).unwrap();
    let env = Env::new()
        .input("d", f32s(&[4], vec![0.0; 4]))
        .input("s", f32s(&[1], vec![1.0]))
        .bind("p", -2);
    assert_eq!(
        run(&g, &env).unwrap_err(),
        EvalError::Bounds {
            node: NodeId(2),
            op: "slice_update".into(),
            axis: 0,
            start: -2,
            end: -1,
            size: 4,
        }
    );
}

#[test]
fn reductions_over_an_empty_axis() {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, Shape::new(["a", "b"])).unwrap();
    let am = g.argmax(x, 1, false).unwrap();
    let mx = g.max(x, &[0, 1], true).unwrap();
    let sm = g.sum(x, &[1], false).unwrap();
    let empty = |a: usize, b: usize| Env::new().input("x", f32s(&[a, b], vec![0.0; a * b]));
    let err = run_nodes(&g, &empty(3, 0), &[am]).unwrap_err();
    assert_eq!(
        err,
        EvalError::EmptyReduction {
            node: NodeId(1),
            op: "reduce.argmax".into(),
            axis: 1
        }
    );
    assert_eq!(
        err.to_string(),
        "%1 (reduce.argmax): reduced axis 1 has size 0, and reduce.argmax of no elements is undefined"
    );
    assert_eq!(
        run_nodes(&g, &empty(3, 0), &[mx]).unwrap_err(),
        EvalError::EmptyReduction {
            node: NodeId(2),
            op: "reduce.max".into(),
            axis: 1
        }
    );
    // Sums of nothing are zero; an empty result needs no elements.
    assert_eq!(
        run_nodes(&g, &empty(3, 0), &[sm]).unwrap()[0],
        f32s(&[3], vec![0.0; 3])
    );
    assert_eq!(
        run_nodes(&g, &empty(0, 0), &[am]).unwrap()[0],
        i64s(&[0], vec![])
    );
}

#[test]
fn negative_and_huge_dims_are_errors() {
    let mut g = Graph::new();
    let f = g.full(Scalar::Int(1), DType::I8, shp(&["n", "n"])).unwrap();
    g.set_output("f", f).unwrap();
    assert_eq!(
        run(&g, &Env::new().bind("n", -2)).unwrap_err(),
        EvalError::NegativeDim {
            node: NodeId(0),
            op: "full".into(),
            what: "dim 0 of the result shape [n, n]".into(),
            dim: "n".into(),
            value: -2,
            bindings: Bindings::new().with("n", -2),
        }
    );
    for n in [1i64 << 20, 1 << 40, i64::MAX] {
        let err = run(&g, &Env::new().bind("n", n)).unwrap_err();
        assert_eq!(
            err,
            EvalError::TooLarge {
                node: NodeId(0),
                op: "full".into(),
                shape: vec![n, n],
                elements: (n as u128) * (n as u128),
                limit: DEFAULT_MAX_ELEMENTS,
            }
        );
    }
    let err = run(&g, &Env::new().bind("n", 20).max_elements(100)).unwrap_err();
    assert!(matches!(
        err,
        EvalError::TooLarge {
            elements: 400,
            limit: 100,
            ..
        }
    ));
    assert_eq!(
        run(&g, &Env::new()).unwrap_err(),
        EvalError::Dim {
            node: NodeId(0),
            op: "full".into(),
            source: DimError::Unbound {
                symbol: "n".into(),
                dim: "n".into()
            }
        }
    );
    // A negative padding after binding.
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, Shape::new([2])).unwrap();
    let p = g
        .pad(
            x,
            vec![(Dim::symbol("p"), Dim::constant(1))],
            Scalar::Float(0.0),
        )
        .unwrap();
    g.set_output("p", p).unwrap();
    let env = Env::new().input("x", f32s(&[2], vec![1.0, 2.0]));
    assert_eq!(
        run(&g, &env.clone().bind("p", 1))
            .unwrap()
            .get("p")
            .unwrap(),
        &f32s(&[4], vec![0.0, 1.0, 2.0, 0.0])
    );
    assert!(matches!(
        run(&g, &env.bind("p", -1)).unwrap_err(),
        EvalError::NegativeDim { value: -1, ref what, .. } if what == "padding before axis 0"
    ));
}

/// One graph with every op that takes symbolic dims, run under many bindings (negative, zero,
/// huge, extreme): every result is a value or an error, never a panic.
#[test]
fn no_panics_for_any_bindings() {
    let mut g = Graph::new();
    let nm = Shape::new(["n", "m"]);
    let full = g.full(Scalar::Float(1.5), DType::F32, nm.clone()).unwrap();
    let iota = g.iota(1, DType::I64, nm.clone()).unwrap();
    let x = g.input("x", DType::F32, Shape::new(["k"])).unwrap();
    let flat = g.reshape(full, Shape(vec![sym("n * m")])).unwrap();
    let back = g.reshape(flat, nm.clone()).unwrap();
    let ex = g
        .expand(x, Shape(vec![Dim::symbol("n"), Dim::symbol("k")]))
        .unwrap();
    let sl = g.slice(x, 0, "n", "m", 3).unwrap();
    let pd = g
        .pad(
            x,
            vec![(Dim::symbol("n"), Dim::symbol("m"))],
            Scalar::Float(0.0),
        )
        .unwrap();
    let one = g
        .full(Scalar::Float(2.0), DType::F32, Shape::new([1]))
        .unwrap();
    let su = g.slice_update(x, one, 0, "n").unwrap();
    let am = g.argmax(iota, 1, true).unwrap();
    let mx = g.max(back, &[0], false).unwrap();
    let mm = g.matmul_t(full, back, false, true).unwrap();
    let cat = g.concat(&[x, sl, pd], 0).unwrap();
    let idx = g.iota(0, DType::I64, Shape::new(["m"])).unwrap();
    let sel = g.index_select(x, 0, idx).unwrap();
    let roots = [full, iota, flat, back, ex, sl, pd, su, am, mx, mm, cat, sel];
    let values = [i64::MIN, -7, -1, 0, 1, 2, 5, 300, 1 << 40, i64::MAX];
    let x = f32s(&[5], vec![1.0, 2.0, 3.0, 4.0, 5.0]);
    let mut ok = 0;
    for &n in &values {
        for &m in &values {
            let env = Env::new()
                .input("x", x.clone())
                .bind("n", n)
                .bind("m", m)
                .max_elements(1 << 16);
            for r in roots {
                if run_nodes(&g, &env, &[r]).is_ok() {
                    ok += 1;
                }
            }
        }
    }
    assert!(ok > 100, "only {ok} runs succeeded");
}

#[test]
fn integer_and_float_semantics_spot_checks() {
    let mut g = Graph::new();
    let a = g.input("a", DType::I8, Shape::new([4])).unwrap();
    let b = g.input("b", DType::I8, Shape::new([4])).unwrap();
    let div = g.div(a, b).unwrap();
    let rem = g.modulo(a, b).unwrap();
    let sum = g.add(a, b).unwrap();
    g.set_output("div", div).unwrap();
    g.set_output("mod", rem).unwrap();
    g.set_output("sum", sum).unwrap();
    let i8s = |v: Vec<i8>| Tensor::from_vec(vec![4], v).unwrap();
    let env = Env::new()
        .input("a", i8s(vec![7, -7, -128, 100]))
        .input("b", i8s(vec![-2, 0, -1, 100]));
    let out = run(&g, &env).unwrap();
    assert_eq!(out.get("div").unwrap(), &i8s(vec![-4, 0, -128, 1]));
    assert_eq!(out.get("mod").unwrap(), &i8s(vec![-1, 0, 0, 0]));
    assert_eq!(out.get("sum").unwrap(), &i8s(vec![5, -7, 127, -56]));

    // bf16 sums accumulate in f64 and round once: 256 + 1 + 1 + ... (bf16 spacing at 256 is 2).
    let mut g = Graph::new();
    let x = g.input("x", DType::BF16, Shape::new([5])).unwrap();
    let s = g.sum(x, &[0], false).unwrap();
    let c = g.cast(x, DType::U8).unwrap();
    g.set_output("s", s).unwrap();
    g.set_output("c", c).unwrap();
    let v = [256.0f32, 1.0, 1.0, 1.0, -1.5];
    let t = Tensor::from_vec(vec![5], v.map(half::bf16::from_f32).to_vec()).unwrap();
    let out = run(&g, &Env::new().input("x", t)).unwrap();
    assert_eq!(
        out.get("s").unwrap().as_slice::<half::bf16>().unwrap(),
        &[half::bf16::from_f32(258.0)] // 257.5 rounds to 258
    );
    assert_eq!(
        out.get("c").unwrap().as_slice::<u8>().unwrap(),
        &[255, 1, 1, 1, 0] // saturating, truncating
    );
}

#[test]
fn block_quantized_operands() {
    use kiln_ir::QuantType;
    // Two q8_0 rows of one block each: f16 scale, then 32 signed bytes; x = d * q.
    let mut bytes = Vec::new();
    let mut dense = Vec::new();
    for (row, d) in [0.5f32, -0.25].into_iter().enumerate() {
        bytes.extend_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
        for i in 0..32i32 {
            let q = (i - 16) * (row as i32 + 1);
            bytes.push(q as i8 as u8);
            dense.push(d * q as f32);
        }
    }
    let w = Tensor::quantized(QuantType::Q8_0, vec![2, 32], bytes.clone()).unwrap();
    let mut g = Graph::new();
    let wq = g
        .param("w", DType::Quant(QuantType::Q8_0), Shape::new([2, 32]))
        .unwrap();
    let x = g.input("x", DType::F32, Shape::new([1, 32])).unwrap();
    let deq = g.cast(wq, DType::F32).unwrap();
    let y = g.matmul_t(x, wq, false, true).unwrap();
    let idx = g.constant(i64s(&[3], vec![1, 1, 0])).unwrap();
    let rows = g.index_select(wq, 0, idx).unwrap();
    g.set_output("deq", deq).unwrap();
    g.set_output("y", y).unwrap();
    g.set_output("rows", rows).unwrap();
    let xv: Vec<f32> = (0..32).map(|i| i as f32 / 8.0).collect();
    let env = Env::new()
        .param("w", w)
        .input("x", f32s(&[1, 32], xv.clone()));
    let out = run(&g, &env).unwrap();
    assert_eq!(out.get("deq").unwrap(), &f32s(&[2, 32], dense.clone()));
    let dot = |r: usize| (0..32).map(|k| xv[k] * dense[r * 32 + k]).sum::<f32>();
    assert_eq!(out.get("y").unwrap(), &f32s(&[1, 2], vec![dot(0), dot(1)]));
    let picked = [&bytes[34..], &bytes[34..], &bytes[..34]].concat();
    assert_eq!(
        out.get("rows").unwrap(),
        &Tensor::quantized(QuantType::Q8_0, vec![3, 32], picked).unwrap()
    );
}
