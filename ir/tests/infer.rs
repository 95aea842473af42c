//! Shape and dtype inference of every op, including the exact error for each misuse.

use kiln_ir::{
    broadcast_shapes, BinaryOp, DType, Dim, Graph, IrError, NodeId, Op, QuantType, ReduceOp,
    Scalar, ScatterReduce, Shape, TensorType, UnaryOp,
};

fn s(dims: &str) -> Shape {
    if dims.trim().is_empty() {
        return Shape::scalar();
    }
    Shape(dims.split(',').map(|d| Dim::parse(d).unwrap()).collect())
}

fn t(dtype: DType, dims: &str) -> TensorType {
    TensorType::new(dtype, s(dims))
}

fn input(g: &mut Graph, name: &str, dtype: DType, dims: &str) -> NodeId {
    g.input(name, dtype, s(dims)).unwrap()
}

fn shape_err(op: &str, operands: Vec<TensorType>, expected: &str) -> IrError {
    IrError::Shape {
        op: op.into(),
        operands,
        expected: expected.into(),
    }
}

fn dtype_err(op: &str, operands: Vec<TensorType>, expected: &str) -> IrError {
    IrError::DType {
        op: op.into(),
        operands,
        expected: expected.into(),
    }
}

#[test]
fn broadcasting_matches_numpy() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/broadcast.json"
    ))
    .unwrap();
    let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(cases.len(), 400);
    let dims = |v: &serde_json::Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_i64().unwrap())
            .collect()
    };
    let (mut ok, mut refused) = (0, 0);
    for case in &cases {
        let (a, b) = (Shape::new(dims(&case["a"])), Shape::new(dims(&case["b"])));
        let want = (!case["out"].is_null()).then(|| Shape::new(dims(&case["out"])));
        assert_eq!(broadcast_shapes(&a, &b), want, "{a} with {b}");
        // The builder broadcasts the same way and produces that shape (or the error).
        let mut g = Graph::new();
        let x = g.input("a", DType::F32, a.clone()).unwrap();
        let y = g.input("b", DType::F32, b.clone()).unwrap();
        match (&want, g.add(x, y)) {
            (Some(w), Ok(z)) => {
                assert_eq!(&g.ty(z).shape, w);
                ok += 1;
            }
            (None, Err(e)) => {
                assert_eq!(
                    e,
                    shape_err(
                        "add",
                        vec![
                            TensorType::new(DType::F32, a),
                            TensorType::new(DType::F32, b)
                        ],
                        "shapes that broadcast (NumPy rules)"
                    )
                );
                refused += 1;
            }
            (w, r) => panic!("{a} with {b}: numpy says {w:?}, builder says {r:?}"),
        }
    }
    assert!(ok > 100 && refused > 30, "fixture covers both outcomes");
}

#[test]
fn symbolic_broadcasting() {
    let a = s("batch, seq, 1");
    let b = s("seq, 64");
    assert_eq!(broadcast_shapes(&a, &b), Some(s("batch, seq, 64")));
    // A symbol is never assumed to be 1.
    assert_eq!(broadcast_shapes(&s("seq"), &s("past")), None);
    assert_eq!(
        broadcast_shapes(&s("seq + past"), &s("past + seq")),
        Some(s("past + seq"))
    );
}

#[test]
fn builder_inserts_explicit_reshape_and_expand() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", DType::F32, "seq, 4");
    let b = input(&mut g, "b", DType::F32, "4");
    let y = g.add(x, b).unwrap();
    let ops: Vec<String> = g.nodes().iter().map(|n| n.op.name()).collect();
    assert_eq!(ops, ["input", "input", "reshape", "expand", "add"]);
    assert_eq!(g.ty(y), &t(DType::F32, "seq, 4"));
    // The raw op does not broadcast.
    let e = g.push(Op::Binary(BinaryOp::Add), vec![x, b]).unwrap_err();
    assert_eq!(
        e,
        shape_err(
            "add",
            vec![t(DType::F32, "seq, 4"), t(DType::F32, "4")],
            "identical shapes (broadcast first with expand)"
        )
    );
}

#[test]
fn sources() {
    let mut g = Graph::new();
    let w = g
        .param("w", DType::Quant(QuantType::Q4_K), s("8, 512"))
        .unwrap();
    assert_eq!(g.ty(w), &t(DType::Quant(QuantType::Q4_K), "8, 512"));
    assert_eq!(
        g.param("w2", DType::Quant(QuantType::Q4_0), s("8, 48")),
        Err(IrError::Attribute {
            op: "param".into(),
            message: "a q4_0 tensor needs a constant last dim that is a multiple of its block size 32, shape is [8, 48]".into()
        })
    );
    assert_eq!(
        g.param("w", DType::F32, s("3")),
        Err(IrError::Duplicate {
            kind: "param",
            name: "w".into()
        })
    );
    assert_eq!(
        g.input("x", DType::F32, s("seq, -2")),
        Err(IrError::Attribute {
            op: "input".into(),
            message: "shape [seq, -2] has a negative dim (-2)".into()
        })
    );
    assert_eq!(
        g.full(Scalar::Int(300), DType::U8, s("2")),
        Err(IrError::Attribute {
            op: "full".into(),
            message: "value 300 does not fit dtype u8".into()
        })
    );
    assert_eq!(
        g.full(Scalar::Float(0.5), DType::I32, s("2")),
        Err(IrError::Attribute {
            op: "full".into(),
            message: "value 0.5 does not fit dtype i32".into()
        })
    );
    let f = g.full(Scalar::Int(3), DType::F16, s("seq")).unwrap();
    assert_eq!(g.ty(f), &t(DType::F16, "seq"));
    assert_eq!(
        g.iota(2, DType::I64, s("seq, 4")),
        Err(IrError::Axis {
            op: "iota".into(),
            axis: 2,
            rank: 2,
            operand: t(DType::I64, "seq, 4")
        })
    );
    assert_eq!(
        g.iota(0, DType::Bool, s("4")),
        Err(IrError::Attribute {
            op: "iota".into(),
            message: "dtype must be an integer or float type, not bool".into()
        })
    );
    let c = g
        .constant(kiln_ir::Tensor::from_vec(vec![2, 3], vec![1i32; 6]).unwrap())
        .unwrap();
    assert_eq!(g.ty(c), &t(DType::I32, "2, 3"));
}

#[test]
fn unary_dtype_rules() {
    let mut g = Graph::new();
    let f = input(&mut g, "f", DType::BF16, "seq");
    let i = input(&mut g, "i", DType::I32, "seq");
    let u = input(&mut g, "u", DType::U8, "seq");
    let b = input(&mut g, "b", DType::Bool, "seq");
    for op in UnaryOp::ALL {
        let r = g.unary(op, f);
        assert_eq!(r.is_ok(), op != UnaryOp::Not, "{op:?} on bf16");
    }
    assert!(g.neg(i).is_ok() && g.abs(u).is_ok() && g.not(b).is_ok() && g.not(u).is_ok());
    assert_eq!(
        g.exp(i),
        Err(dtype_err(
            "exp",
            vec![t(DType::I32, "seq")],
            "a float dtype"
        ))
    );
    assert_eq!(
        g.neg(u),
        Err(dtype_err(
            "neg",
            vec![t(DType::U8, "seq")],
            "a float or signed integer dtype"
        ))
    );
    assert_eq!(
        g.sign(b),
        Err(dtype_err(
            "sign",
            vec![t(DType::Bool, "seq")],
            "a float or integer dtype"
        ))
    );
}

#[test]
fn binary_dtype_rules() {
    let mut g = Graph::new();
    let f = input(&mut g, "f", DType::F32, "2");
    let h = input(&mut g, "h", DType::F16, "2");
    let i = input(&mut g, "i", DType::I64, "2");
    let b = input(&mut g, "b", DType::Bool, "2");
    let c = g.lt(f, f).unwrap();
    assert_eq!(g.ty(c).dtype, DType::Bool);
    let n = g.and(b, b).unwrap();
    assert_eq!(g.ty(n).dtype, DType::Bool);
    let n = g.xor(i, i).unwrap();
    assert_eq!(g.ty(n).dtype, DType::I64);
    assert_eq!(
        g.add(f, h),
        Err(dtype_err(
            "add",
            vec![t(DType::F32, "2"), t(DType::F16, "2")],
            "operands of the same dtype (cast one first)"
        ))
    );
    assert_eq!(
        g.pow(i, i),
        Err(dtype_err(
            "pow",
            vec![t(DType::I64, "2"), t(DType::I64, "2")],
            "a float dtype"
        ))
    );
    assert_eq!(
        g.or(f, f),
        Err(dtype_err(
            "or",
            vec![t(DType::F32, "2"), t(DType::F32, "2")],
            "a bool or integer dtype"
        ))
    );
    assert_eq!(
        g.mul(b, b),
        Err(dtype_err(
            "mul",
            vec![t(DType::Bool, "2"), t(DType::Bool, "2")],
            "a float or integer dtype"
        ))
    );
    assert_eq!(
        g.push(Op::Binary(BinaryOp::Add), vec![f]),
        Err(IrError::Arity {
            op: "add".into(),
            expected: "2".into(),
            got: 1
        })
    );
    assert_eq!(
        g.push(Op::Binary(BinaryOp::Add), vec![f, NodeId(99)]),
        Err(IrError::UnknownNode {
            op: "add".into(),
            id: 99,
            len: g.nodes().len()
        })
    );
}

#[test]
fn where_and_cast() {
    let mut g = Graph::new();
    let c = input(&mut g, "c", DType::Bool, "seq, 1");
    let a = input(&mut g, "a", DType::F32, "seq, 4");
    let z = g.scalar(Scalar::Float(0.0), DType::F32).unwrap();
    let w = g.where_(c, a, z).unwrap();
    assert_eq!(g.ty(w), &t(DType::F32, "seq, 4"));
    assert_eq!(
        g.where_(a, a, a),
        Err(dtype_err(
            "where",
            vec![
                t(DType::F32, "seq, 4"),
                t(DType::F32, "seq, 4"),
                t(DType::F32, "seq, 4")
            ],
            "a bool condition and two values of the same (not quantized) dtype"
        ))
    );
    let q = g
        .param("q", DType::Quant(QuantType::Q8_0), s("4, 32"))
        .unwrap();
    let d = g.cast(q, DType::F16).unwrap();
    assert_eq!(g.ty(d), &t(DType::F16, "4, 32"));
    assert_eq!(
        g.cast(a, DType::Quant(QuantType::Q8_0)),
        Err(IrError::Attribute {
            op: "cast".into(),
            message: "cannot produce block-quantized dtype q8_0; quantization is not an IR op"
                .into()
        })
    );
    assert_eq!(
        g.exp(q),
        Err(dtype_err(
            "exp",
            vec![t(DType::Quant(QuantType::Q8_0), "4, 32")],
            "a float dtype"
        ))
    );
}

#[test]
fn reductions() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", DType::F32, "batch, seq, 64");
    let r = g.reduce(ReduceOp::Sum, x, &[2, 0, 2], false).unwrap();
    assert_eq!(g.ty(r), &t(DType::F32, "seq"));
    let r = g.max(x, &[1], true).unwrap();
    assert_eq!(g.ty(r), &t(DType::F32, "batch, 1, 64"));
    let r = g.argmax(x, 2, false).unwrap();
    assert_eq!(g.ty(r), &t(DType::I64, "batch, seq"));
    assert_eq!(
        g.sum(x, &[3], false),
        Err(IrError::Axis {
            op: "reduce.sum".into(),
            axis: 3,
            rank: 3,
            operand: t(DType::F32, "batch, seq, 64")
        })
    );
    assert_eq!(
        g.reduce(ReduceOp::ArgMax, x, &[0, 1], false),
        Err(IrError::Attribute {
            op: "reduce.argmax".into(),
            message: "argmax reduces exactly one axis, got [0, 1]".into()
        })
    );
    assert_eq!(
        g.sum(x, &[], false),
        Err(IrError::Attribute {
            op: "reduce.sum".into(),
            message: "needs at least one axis".into()
        })
    );
    // The raw op insists on sorted axes.
    assert_eq!(
        g.push(
            Op::Reduce {
                op: ReduceOp::Prod,
                axes: vec![1, 0],
                keepdim: false
            },
            vec![x]
        ),
        Err(IrError::Attribute {
            op: "reduce.prod".into(),
            message: "axes [1, 0] must be sorted and without duplicates".into()
        })
    );
    let b = input(&mut g, "b", DType::Bool, "3");
    assert_eq!(
        g.sum(b, &[0], false),
        Err(dtype_err(
            "reduce.sum",
            vec![t(DType::Bool, "3")],
            "a float or integer dtype"
        ))
    );
}

#[test]
fn views() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", DType::F32, "batch, seq, 64");
    let r = g.reshape(x, s("batch, seq, 8, 8")).unwrap();
    assert_eq!(g.ty(r), &t(DType::F32, "batch, seq, 8, 8"));
    let r2 = g.reshape(x, s("seq*batch*64")).unwrap();
    assert_eq!(g.ty(r2), &t(DType::F32, "batch*seq*64"));
    assert_eq!(
        g.reshape(x, s("batch, seq, 60")),
        Err(shape_err(
            "reshape",
            vec![t(DType::F32, "batch, seq, 64")],
            "the same number of elements as the target shape [batch, seq, 60] (64*batch*seq vs 60*batch*seq)"
        ))
    );
    let p = g.permute(r, &[0, 2, 1, 3]).unwrap();
    assert_eq!(g.ty(p), &t(DType::F32, "batch, 8, seq, 8"));
    assert_eq!(
        g.permute(x, &[0, 0, 1]),
        Err(IrError::Attribute {
            op: "permute".into(),
            message: "[0, 0, 1] is not a permutation of the 3 axes of f32[batch, seq, 64]".into()
        })
    );
    let m = input(&mut g, "m", DType::F32, "seq, 1");
    let e = g.expand(m, s("batch, seq, 5")).unwrap();
    assert_eq!(g.ty(e), &t(DType::F32, "batch, seq, 5"));
    assert_eq!(
        g.expand(m, s("past, 5")),
        Err(shape_err(
            "expand",
            vec![t(DType::F32, "seq, 1")],
            "a shape that broadcasts to [past, 5] (each dim equal to the target's or 1)"
        ))
    );
    let sl = g.slice(x, 1, 1, Dim::parse("seq").unwrap(), 2).unwrap();
    assert_eq!(g.ty(sl), &t(DType::F32, "batch, seq // 2, 64"));
    let sl = g.slice(x, 2, 8, 64, 1).unwrap();
    assert_eq!(g.ty(sl), &t(DType::F32, "batch, seq, 56"));
    assert_eq!(
        g.slice(x, 2, 8, 65, 1),
        Err(shape_err(
            "slice",
            vec![t(DType::F32, "batch, seq, 64")],
            "0 <= start (8) <= end (65) <= size (64)"
        ))
    );
    assert_eq!(
        g.slice(x, 2, 0, 4, 0),
        Err(IrError::Attribute {
            op: "slice".into(),
            message: "step must be at least 1, got 0".into()
        })
    );
    let pd = g
        .pad(
            x,
            vec![
                (0.into(), 0.into()),
                ("past".into(), 0.into()),
                (1.into(), 2.into()),
            ],
            Scalar::Float(0.0),
        )
        .unwrap();
    assert_eq!(g.ty(pd), &t(DType::F32, "batch, past + seq, 67"));
    assert_eq!(
        g.pad(x, vec![(0.into(), 0.into())], Scalar::Float(0.0)),
        Err(IrError::Attribute {
            op: "pad".into(),
            message: "needs one (before, after) pair per axis: 1 pairs for f32[batch, seq, 64]"
                .into()
        })
    );
    assert_eq!(
        g.pad(
            x,
            vec![
                (0.into(), 0.into()),
                (0.into(), (-1).into()),
                (0.into(), 0.into())
            ],
            Scalar::Float(0.0)
        ),
        Err(IrError::Attribute {
            op: "pad".into(),
            message: "padding of axis 1 is negative (-1); use slice to crop".into()
        })
    );
    let k = input(&mut g, "k", DType::F32, "batch, past, 64");
    let c = g.concat(&[k, x], 1).unwrap();
    assert_eq!(g.ty(c), &t(DType::F32, "batch, past + seq, 64"));
    assert_eq!(
        g.concat(&[k, r], 1),
        Err(shape_err(
            "concat",
            vec![
                t(DType::F32, "batch, past, 64"),
                t(DType::F32, "batch, seq, 8, 8")
            ],
            "the same rank and equal dims on every axis but 1"
        ))
    );
    assert_eq!(
        g.concat(&[], 0),
        Err(IrError::Arity {
            op: "concat".into(),
            expected: "at least 1".into(),
            got: 0
        })
    );
    let f = g.flip(x, &[2, 0]).unwrap();
    assert_eq!(g.ty(f), &t(DType::F32, "batch, seq, 64"));
    let q = g
        .param("q", DType::Quant(QuantType::Q4_0), s("4, 32"))
        .unwrap();
    assert_eq!(
        g.permute(q, &[1, 0]),
        Err(dtype_err(
            "permute",
            vec![t(DType::Quant(QuantType::Q4_0), "4, 32")],
            "no block-quantized operand (cast it to a float type first)"
        ))
    );
}

#[test]
fn indexing() {
    let mut g = Graph::new();
    let emb = g
        .param("embed", DType::Quant(QuantType::Q6_K), s("1000, 256"))
        .unwrap();
    let ids = input(&mut g, "ids", DType::I64, "seq");
    let rows = g.index_select(emb, 0, ids).unwrap();
    assert_eq!(g.ty(rows), &t(DType::Quant(QuantType::Q6_K), "seq, 256"));
    assert_eq!(
        g.index_select(emb, 1, ids),
        Err(dtype_err(
            "index_select",
            vec![
                t(DType::Quant(QuantType::Q6_K), "1000, 256"),
                t(DType::I64, "seq")
            ],
            "an axis other than the last for a q6_k operand (its blocks run along the last axis)"
        ))
    );
    let fids = input(&mut g, "fids", DType::F32, "seq");
    assert_eq!(
        g.index_select(emb, 0, fids),
        Err(dtype_err(
            "index_select",
            vec![
                t(DType::Quant(QuantType::Q6_K), "1000, 256"),
                t(DType::F32, "seq")
            ],
            "integer indices, not f32"
        ))
    );
    let x = input(&mut g, "x", DType::F32, "4, 5");
    let idx = input(&mut g, "idx", DType::I32, "4, 2");
    let ga = g.gather(x, 1, idx).unwrap();
    assert_eq!(g.ty(ga), &t(DType::I32, "4, 2").with_dtype(DType::F32));
    let big = input(&mut g, "big", DType::I32, "6, 2");
    assert_eq!(
        g.gather(x, 1, big),
        Err(shape_err(
            "gather",
            vec![t(DType::F32, "4, 5"), t(DType::I32, "6, 2")],
            "indices of the same rank as the operand, no larger on any axis but 1"
        ))
    );
    let src = input(&mut g, "src", DType::F32, "4, 2");
    let sc = g.scatter(x, 1, idx, src, ScatterReduce::Add).unwrap();
    assert_eq!(g.ty(sc), &t(DType::F32, "4, 5"));
    let src3 = input(&mut g, "src3", DType::F32, "4, 3");
    assert_eq!(
        g.scatter(x, 1, idx, src3, ScatterReduce::Assign),
        Err(shape_err(
            "scatter",
            vec![
                t(DType::F32, "4, 5"),
                t(DType::I32, "4, 2"),
                t(DType::F32, "4, 3")
            ],
            "indices and source of the same shape, with the destination's rank"
        ))
    );
    let cache = g.state("k", DType::F16, s("batch, 2, 512, 64")).unwrap();
    let new = input(&mut g, "new", DType::F16, "batch, 2, seq, 64");
    let up = g.slice_update(cache, new, 2, "past").unwrap();
    assert_eq!(g.ty(up), &t(DType::F16, "batch, 2, 512, 64"));
    g.set_state_update("k", up).unwrap();
    let wide = input(&mut g, "wide", DType::F16, "batch, 2, 600, 64");
    assert_eq!(
        g.slice_update(cache, wide, 2, 0),
        Err(shape_err(
            "slice_update",
            vec![
                t(DType::F16, "batch, 2, 512, 64"),
                t(DType::F16, "batch, 2, 600, 64")
            ],
            "0 <= start (0) <= end (600) <= size (512)"
        ))
    );
}

#[test]
fn matmul_rules() {
    let mut g = Graph::new();
    let x = input(&mut g, "x", DType::F32, "batch, seq, 64");
    let w = g
        .param("w", DType::Quant(QuantType::Q4_1), s("128, 64"))
        .unwrap();
    let y = g.matmul_t(x, w, false, true).unwrap();
    assert_eq!(g.ty(y), &t(DType::F32, "batch, seq, 128"));
    assert_eq!(
        g.matmul(x, w),
        Err(dtype_err(
            "matmul",
            vec![t(DType::F32, "batch, seq, 64"), t(DType::Quant(QuantType::Q4_1), "128, 64")],
            "a q4_1 operand stored with its blocks along k: b as [.., n, k] with trans_b, or a as [.., m, k] without trans_a"
        ))
    );
    let h = g.param("h", DType::F16, s("64, 32")).unwrap();
    let y = g.matmul(x, h).unwrap();
    assert_eq!(g.ty(y), &t(DType::F32, "batch, seq, 32"));
    let bf = g.param("bf", DType::BF16, s("32, 8")).unwrap();
    let hh = g.param("hh", DType::F16, s("7, 32")).unwrap();
    let n = g.matmul(hh, bf).unwrap();
    assert_eq!(g.ty(n), &t(DType::F32, "7, 8"));
    let k = input(&mut g, "k", DType::F32, "batch, 1, past, 64");
    let q = input(&mut g, "q", DType::F32, "heads, seq, 64");
    let s_ = g.matmul_t(q, k, false, true).unwrap();
    assert_eq!(g.ty(s_), &t(DType::F32, "batch, heads, seq, past"));
    assert_eq!(
        g.matmul(x, x),
        Err(shape_err(
            "matmul",
            vec![
                t(DType::F32, "batch, seq, 64"),
                t(DType::F32, "batch, seq, 64")
            ],
            "equal contraction dims (k = 64 vs seq, trans_a=false, trans_b=false)"
        ))
    );
    let v = input(&mut g, "v", DType::F32, "64");
    assert_eq!(
        g.matmul(x, v),
        Err(shape_err(
            "matmul",
            vec![t(DType::F32, "batch, seq, 64"), t(DType::F32, "64")],
            "operands of rank 2 or more (unsqueeze vectors first)"
        ))
    );
    let i = input(&mut g, "i", DType::I32, "3, 64");
    assert_eq!(
        g.matmul_t(x, i, false, true),
        Err(dtype_err(
            "matmul",
            vec![t(DType::F32, "batch, seq, 64"), t(DType::I32, "3, 64")],
            "two float operands (f16/bf16/f32/f64, one may be block-quantized) or two integer operands of the same dtype"
        ))
    );
    let ii = g.matmul_t(i, i, false, true).unwrap();
    assert_eq!(g.ty(ii), &t(DType::I32, "3, 3"));
}

#[test]
fn outputs_and_states() {
    let mut g = Graph::new();
    let st = g.state("cache", DType::F32, s("4")).unwrap();
    let x = input(&mut g, "x", DType::F32, "2");
    g.set_output("y", x).unwrap();
    assert_eq!(
        g.set_output("y", x),
        Err(IrError::Duplicate {
            kind: "output",
            name: "y".into()
        })
    );
    assert_eq!(
        g.set_state_update("cache", x),
        Err(IrError::StateType {
            name: "cache".into(),
            expected: t(DType::F32, "4"),
            actual: t(DType::F32, "2")
        })
    );
    assert_eq!(
        g.set_state_update("nope", st),
        Err(IrError::UnknownState {
            name: "nope".into()
        })
    );
    g.set_state_update("cache", st).unwrap();
    assert_eq!(g.inputs(), vec![("x", x)]);
    assert_eq!(g.states(), vec![("cache", st)]);
    assert_eq!(g.output("y"), Some(x));
}

#[test]
fn error_messages_show_shapes_with_symbols() {
    let mut g = Graph::new();
    let a = input(&mut g, "a", DType::F32, "batch, seq, 64");
    let b = input(&mut g, "b", DType::F32, "batch, past, 32");
    let e = g.add(a, b).unwrap_err();
    assert_eq!(
        e.to_string(),
        "add: operand types f32[batch, seq, 64], f32[batch, past, 32] do not fit: expected shapes that broadcast (NumPy rules)"
    );
    let _ = UnaryOp::Exp;
}

trait WithDType {
    fn with_dtype(self, d: DType) -> Self;
}

impl WithDType for TensorType {
    fn with_dtype(mut self, d: DType) -> Self {
        self.dtype = d;
        self
    }
}

#[test]
fn dim_values() {
    let mut g = Graph::new();
    let v = g
        .dim_value(Dim::parse("past + seq").unwrap(), DType::I64)
        .unwrap();
    assert_eq!(g.ty(v), &t(DType::I64, ""));
    assert!(matches!(g.node(v).op, Op::DimValue { .. }));
    let c = g.dim_value(Dim::constant(7), DType::F32).unwrap();
    assert_eq!(
        g.node(c).op,
        Op::Full {
            value: Scalar::Float(7.0),
            dtype: DType::F32,
            shape: Shape::scalar()
        }
    );
    assert_eq!(
        g.dim_value(Dim::symbol("seq"), DType::Bool),
        Err(IrError::Attribute {
            op: "dim_value".into(),
            message: "dtype must be an integer or float type, not bool".into()
        })
    );
}
