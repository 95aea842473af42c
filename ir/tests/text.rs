//! The text format: round trips, snapshots, parse errors, and robustness on arbitrary input.

use half::{bf16, f16};
use kiln_ir::{
    parse_graph, BinaryOp, DType, Dim, Graph, IrError, NodeId, Op, ParseError, ParseErrorKind,
    QuantType, ReduceOp, Scalar, ScatterReduce, Shape, Tensor, UnaryOp,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Helpers

/// A shape from text: `shape("batch, seq + 1, 64")`.
fn shape(text: &str) -> Shape {
    if text.trim().is_empty() {
        return Shape::scalar();
    }
    Shape(text.split(',').map(|d| Dim::parse(d).unwrap()).collect())
}

fn sym(name: &str) -> Dim {
    Dim::symbol(name)
}

/// Prints, parses, and checks that the graph and its text both come back unchanged.
#[track_caller]
fn round_trip(g: &Graph) {
    let text = g.to_string();
    let back = match parse_graph(&text) {
        Ok(b) => b,
        Err(e) => panic!("{e}\n--- text ---\n{text}"),
    };
    assert_eq!(&back, g, "graph changed in the round trip:\n{text}");
    assert_eq!(back.to_string(), text);
}

/// A deterministic pseudo-random stream (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A tensor of `dtype` and `dims` with random contents (random bit patterns for floats, so
/// NaNs with payloads, infinities, subnormals and -0.0 all occur).
fn random_tensor(rng: &mut Rng, dtype: DType, dims: &[usize]) -> Tensor {
    let n: usize = dims.iter().product();
    let dims = dims.to_vec();
    macro_rules! vals {
        ($f:expr) => {
            (0..n).map(|_| $f(rng.next())).collect::<Vec<_>>()
        };
    }
    match dtype {
        DType::F32 => Tensor::from_vec(dims, vals!(|r: u64| f32::from_bits(r as u32))),
        DType::F16 => Tensor::from_vec(dims, vals!(|r: u64| f16::from_bits(r as u16))),
        DType::BF16 => Tensor::from_vec(dims, vals!(|r: u64| bf16::from_bits(r as u16))),
        DType::F64 => Tensor::from_vec(dims, vals!(f64::from_bits)),
        DType::I8 => Tensor::from_vec(dims, vals!(|r: u64| r as i8)),
        DType::I16 => Tensor::from_vec(dims, vals!(|r: u64| r as i16)),
        DType::I32 => Tensor::from_vec(dims, vals!(|r: u64| r as i32)),
        DType::I64 => Tensor::from_vec(dims, vals!(|r: u64| r as i64)),
        DType::U8 => Tensor::from_vec(dims, vals!(|r: u64| r as u8)),
        DType::U32 => Tensor::from_vec(dims, vals!(|r: u64| r as u32)),
        DType::Bool => Tensor::from_vec(dims, vals!(|r: u64| r & 1 == 1)),
        DType::Quant(q) => {
            let bytes = (0..dtype.bytes_for(n).unwrap())
                .map(|_| rng.next() as u8)
                .collect();
            Tensor::quantized(q, dims, bytes)
        }
    }
    .unwrap()
}

fn parse_err(text: &str) -> ParseError {
    match parse_graph(text) {
        Ok(g) => panic!("expected an error, parsed:\n{g}"),
        Err(e) => e,
    }
}

/// Asserts the error's position and that its message contains `fragment`.
#[track_caller]
fn assert_error(text: &str, line: usize, column: usize, fragment: &str) -> ParseError {
    let e = parse_err(text);
    assert_eq!(
        (e.line, e.column),
        (line, column),
        "wrong position for error `{e}`"
    );
    let message = e.to_string();
    assert!(
        message.contains(fragment),
        "message `{message}` lacks `{fragment}`"
    );
    assert!(message.starts_with(&format!("line {line}, column {column}: ")));
    e
}

// ---------------------------------------------------------------------------------------------
// Representative graphs (also snapshotted)

/// A two-layer MLP block with block-quantized weights, a bias and SiLU.
fn mlp() -> Graph {
    let mut g = Graph::new();
    let q = |t| DType::Quant(t);
    let x = g.input("x", DType::F32, shape("batch, seq, 64")).unwrap();
    let w_up = g
        .param(
            "layers.0.mlp.up_proj.weight",
            q(QuantType::Q4_0),
            shape("256, 64"),
        )
        .unwrap();
    let b_up = g
        .param("layers.0.mlp.up_proj.bias", DType::F32, shape("256"))
        .unwrap();
    let w_down = g
        .param(
            "layers.0.mlp.down_proj.weight",
            q(QuantType::Q8_0),
            shape("64, 256"),
        )
        .unwrap();
    let h = g.matmul_t(x, w_up, false, true).unwrap();
    let h = g.add(h, b_up).unwrap();
    // silu(h) = h / (1 + exp(-h))
    let neg = g.neg(h).unwrap();
    let e = g.exp(neg).unwrap();
    let one = g.scalar(Scalar::Float(1.0), DType::F32).unwrap();
    let den = g.add(e, one).unwrap();
    let act = g.div(h, den).unwrap();
    let y = g.matmul_t(act, w_down, false, true).unwrap();
    let y = g.add(x, y).unwrap();
    g.set_output("y", y).unwrap();
    g
}

/// Single-head attention over a KV cache read as state, with a causal mask from iota and a
/// softmax built from reduce.max / exp / reduce.sum / div.
fn attention() -> Graph {
    let mut g = Graph::new();
    let q = g.input("q", DType::F32, shape("batch, seq, 64")).unwrap();
    let k_new = g.input("k", DType::F32, shape("batch, seq, 64")).unwrap();
    let v_new = g.input("v", DType::F32, shape("batch, seq, 64")).unwrap();
    let k_past = g
        .state("k_cache", DType::F32, shape("batch, past, 64"))
        .unwrap();
    let v_past = g
        .state("v_cache", DType::F32, shape("batch, past, 64"))
        .unwrap();
    let k = g.concat(&[k_past, k_new], 1).unwrap();
    let v = g.concat(&[v_past, v_new], 1).unwrap();
    let scores = g.matmul_t(q, k, false, true).unwrap();
    let scale = g.scalar(Scalar::Float(0.125), DType::F32).unwrap();
    let scores = g.mul(scores, scale).unwrap();
    // Query i (at absolute position past + i) sees keys j <= past + i.
    let rows = g.iota(0, DType::I64, shape("seq, past + seq")).unwrap();
    let cols = g.iota(1, DType::I64, shape("seq, past + seq")).unwrap();
    let past = g.input("past_len", DType::I64, Shape::scalar()).unwrap();
    let pos = g.add(rows, past).unwrap();
    let mask = g.le(cols, pos).unwrap();
    let neg_inf = g
        .scalar(Scalar::Float(f64::NEG_INFINITY), DType::F32)
        .unwrap();
    let scores = g.where_(mask, scores, neg_inf).unwrap();
    let m = g.max(scores, &[2], true).unwrap();
    let shifted = g.sub(scores, m).unwrap();
    let e = g.exp(shifted).unwrap();
    let s = g.sum(e, &[2], true).unwrap();
    let p = g.div(e, s).unwrap();
    let out = g.matmul(p, v).unwrap();
    g.set_output("out", out).unwrap();
    g
}

/// A KV-cache write at a symbolic offset, fed back as the state's next value.
fn kv_cache_update() -> Graph {
    let mut g = Graph::new();
    let cache = g
        .state(
            "layers.0.attn.k_cache",
            DType::F16,
            shape("batch, 8, 512, 64"),
        )
        .unwrap();
    let k = g
        .input("k", DType::F32, shape("batch, 8, seq, 64"))
        .unwrap();
    let k16 = g.cast(k, DType::F16).unwrap();
    let updated = g.slice_update(cache, k16, 2, sym("past")).unwrap();
    g.set_state_update("layers.0.attn.k_cache", updated)
        .unwrap();
    let visible = g.slice(updated, 2, 0, sym("past") + sym("seq"), 1).unwrap();
    let visible = g.cast(visible, DType::F32).unwrap();
    g.set_output("keys", visible).unwrap();
    g
}

/// A constant (and a fill) of every dtype, with edge values.
fn every_dtype_constants() -> Graph {
    let mut g = Graph::new();
    let mut c = |t: Tensor| {
        g.constant(t).unwrap();
    };
    c(Tensor::from_vec(
        vec![2, 4],
        vec![
            0.1f32,
            -0.0,
            1e-7,
            f32::MAX,
            f32::MIN_POSITIVE / 2.0,
            f32::INFINITY,
            f32::NAN,
            f32::from_bits(0xffc0_0001),
        ],
    )
    .unwrap());
    c(Tensor::from_vec(
        vec![5],
        vec![
            f16::from_f32(0.1),
            f16::MAX,
            f16::from_bits(1),
            f16::NEG_INFINITY,
            f16::NAN,
        ],
    )
    .unwrap());
    c(Tensor::from_vec(
        vec![4],
        vec![
            bf16::from_f32(0.1),
            bf16::from_f32(3.0e38),
            bf16::from_f32(-1.5),
            bf16::NAN,
        ],
    )
    .unwrap());
    c(Tensor::from_vec(vec![3], vec![0.1f64, -1e300, f64::EPSILON]).unwrap());
    c(Tensor::from_vec(vec![3], vec![i8::MIN, 0, i8::MAX]).unwrap());
    c(Tensor::from_vec(vec![3], vec![i16::MIN, -1, i16::MAX]).unwrap());
    c(Tensor::from_vec(vec![3], vec![i32::MIN, 7, i32::MAX]).unwrap());
    c(Tensor::from_vec(vec![3], vec![i64::MIN, 42, i64::MAX]).unwrap());
    c(Tensor::from_vec(vec![3], vec![0u8, 128, 255]).unwrap());
    c(Tensor::from_vec(vec![3], vec![0u32, 1, u32::MAX]).unwrap());
    c(Tensor::from_vec(vec![2, 2], vec![true, false, false, true]).unwrap());
    c(Tensor::scalar(2.5f32));
    c(Tensor::from_vec(vec![2, 0, 3], Vec::<i32>::new()).unwrap());
    let mut bytes: Vec<u8> = (0u8..36).collect();
    c(Tensor::quantized(QuantType::Q4_0, vec![2, 32], bytes.clone()).unwrap());
    bytes.truncate(34);
    c(Tensor::quantized(QuantType::Q8_0, vec![1, 32], bytes).unwrap());
    g.full(Scalar::Int(-3), DType::I32, shape("seq")).unwrap();
    g.full(Scalar::Int(1), DType::F32, shape("seq")).unwrap();
    g.full(Scalar::Float(1.0), DType::F32, shape("seq"))
        .unwrap();
    g.full(Scalar::Bool(true), DType::Bool, shape("2, seq"))
        .unwrap();
    g.full(Scalar::Float(f64::NAN), DType::BF16, Shape::scalar())
        .unwrap();
    g
}

// ---------------------------------------------------------------------------------------------
// Round trips of hand-written graphs

#[test]
fn representative_graphs_round_trip() {
    for g in [
        mlp(),
        attention(),
        kv_cache_update(),
        every_dtype_constants(),
    ] {
        round_trip(&g);
    }
}

#[test]
fn every_op_round_trips() {
    let mut g = Graph::new();
    let f = DType::F32;
    let x = g.input("x", f, shape("batch, seq, 64")).unwrap();
    let y = g.input("y", f, shape("batch, seq, 64")).unwrap();
    let ints = g.input("ids", DType::I32, shape("seq")).unwrap();
    let w = g
        .param("w", DType::Quant(QuantType::Q4_K), shape("32, 256"))
        .unwrap();
    g.state("st", f, shape("batch, seq, 64")).unwrap();
    // Sources.
    g.full(Scalar::Float(0.5), f, shape("batch, seq")).unwrap();
    g.constant(Tensor::from_vec(vec![2], vec![1.0f32, 2.0]).unwrap())
        .unwrap();
    g.iota(1, DType::I64, shape("seq, seq + past")).unwrap();
    g.iota(0, DType::F16, shape("4")).unwrap();
    g.dim_value(Dim::parse("past + seq").unwrap(), DType::I64)
        .unwrap();
    g.dim_value(Dim::parse("seq // 2").unwrap(), DType::F32)
        .unwrap();
    // Every unary op on a dtype it accepts.
    for u in UnaryOp::ALL {
        let operand = if matches!(u, UnaryOp::Not) { ints } else { x };
        g.push(Op::Unary(u), vec![operand]).unwrap();
    }
    // Every binary op.
    let bools = g.lt(x, y).unwrap();
    for b in BinaryOp::ALL {
        let (a, c) = if b.is_logical() {
            (bools, bools)
        } else {
            (x, y)
        };
        g.push(Op::Binary(b), vec![a, c]).unwrap();
    }
    g.push(Op::Where, vec![bools, x, y]).unwrap();
    g.cast(x, DType::BF16).unwrap();
    g.cast(w, DType::F32).unwrap();
    // Every reduction, with and without keepdim.
    for (i, r) in ReduceOp::ALL.into_iter().enumerate() {
        let axes: &[usize] = if r == ReduceOp::ArgMax { &[2] } else { &[0, 2] };
        g.reduce(r, x, axes, i % 2 == 0).unwrap();
    }
    g.reshape(x, shape("batch * seq, 8, 8")).unwrap();
    g.reshape(x, shape("batch, seq, 2, 32")).unwrap();
    g.permute(x, &[2, 0, 1]).unwrap();
    let one = g.reshape(ints, shape("1, seq")).unwrap();
    g.expand(one, shape("batch, seq")).unwrap();
    g.slice(x, 1, 1, sym("seq") - 1, 2).unwrap();
    g.slice(x, 2, 0, 64, 1).unwrap();
    let half = sym("seq").floor_div(&Dim::constant(2));
    g.slice(x, 1, half, sym("seq"), 1).unwrap();
    g.pad(
        x,
        vec![
            (0.into(), 0.into()),
            (1.into(), sym("past")),
            (sym("seq").minimum(&Dim::constant(4)), 3.into()),
        ],
        Scalar::Float(f64::NEG_INFINITY),
    )
    .unwrap();
    g.pad(ints, vec![(2.into(), 0.into())], Scalar::Int(-1))
        .unwrap();
    g.concat(&[x], 0).unwrap();
    g.concat(&[x, y, x], 1).unwrap();
    g.flip(x, &[0, 2]).unwrap();
    g.index_select(w, 0, ints).unwrap();
    let idx = g.iota(2, DType::I64, shape("batch, seq, 64")).unwrap();
    g.gather(x, 2, idx).unwrap();
    g.scatter(x, 2, idx, y, ScatterReduce::Assign).unwrap();
    g.scatter(x, 2, idx, y, ScatterReduce::Add).unwrap();
    let cache = g.state("cache", f, shape("batch, 512, 64")).unwrap();
    let upd = g.slice_update(cache, x, 1, sym("past")).unwrap();
    g.slice_update(cache, x, 1, sym("past") * 2 + 1).unwrap();
    // Every matmul layout.
    let square = g.permute(x, &[0, 2, 1]).unwrap();
    let square = g.matmul(x, square).unwrap(); // [batch, seq, seq]
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        g.matmul_t(square, square, ta, tb).unwrap();
    }
    let xs = g.slice(x, 2, 0, 32, 1).unwrap();
    let xs = g.concat(&[xs, xs, xs, xs, xs, xs, xs, xs], 2).unwrap();
    g.matmul_t(xs, w, false, true).unwrap();
    g.set_output("first", x).unwrap();
    g.set_output("second", upd).unwrap();
    g.set_state_update("st", y).unwrap();
    g.set_state_update("cache", upd).unwrap();
    // Every op kind appears.
    let mut names: Vec<String> = g.nodes().iter().map(|n| n.op.name()).collect();
    names.sort();
    names.dedup();
    for op in [
        "input",
        "param",
        "state",
        "full",
        "constant",
        "iota",
        "where",
        "cast",
        "reshape",
        "permute",
        "expand",
        "slice",
        "pad",
        "concat",
        "flip",
        "index_select",
        "gather",
        "scatter",
        "slice_update",
        "matmul",
        "dim_value",
    ] {
        assert!(names.iter().any(|n| n == op), "{op} missing");
    }
    round_trip(&g);
}

#[test]
fn every_dtype_round_trips() {
    let mut rng = Rng(7);
    let mut g = Graph::new();
    for (i, d) in DType::PLAIN.into_iter().enumerate() {
        g.input(&format!("in_{d}"), d, shape("batch, 3")).unwrap();
        g.param(&format!("p_{d}"), d, shape("2")).unwrap();
        g.state(&format!("s_{d}"), d, Shape::scalar()).unwrap();
        for dims in [&[][..], &[3], &[2, 3], &[2, 1, 2], &[0], &[3, 0]] {
            g.constant(random_tensor(&mut rng, d, dims)).unwrap();
        }
        let value = match d {
            DType::Bool => Scalar::Bool(i % 2 == 0),
            d if d.is_float() => Scalar::Float(-2.75),
            _ => Scalar::Int(d.int_range().unwrap().1),
        };
        g.full(value, d, shape("seq, 2")).unwrap();
    }
    for q in QuantType::ALL {
        let d = DType::Quant(q);
        let n = q.block_size();
        g.param(&format!("w_{q}"), d, shape(&format!("seq, {}", 2 * n)))
            .unwrap();
        g.constant(random_tensor(&mut rng, d, &[2, n])).unwrap();
        g.constant(random_tensor(&mut rng, d, &[0, n])).unwrap();
    }
    round_trip(&g);
}

#[test]
fn every_f16_and_bf16_value_round_trips_exactly() {
    let all: Vec<u16> = (0..=u16::MAX).collect();
    let mut g = Graph::new();
    g.constant(
        Tensor::from_vec(
            vec![all.len()],
            all.iter().map(|&b| f16::from_bits(b)).collect(),
        )
        .unwrap(),
    )
    .unwrap();
    g.constant(
        Tensor::from_vec(
            vec![all.len()],
            all.iter().map(|&b| bf16::from_bits(b)).collect(),
        )
        .unwrap(),
    )
    .unwrap();
    round_trip(&g);
}

#[test]
fn short_decimals_for_16_bit_floats() {
    let mut g = Graph::new();
    let vals = [0.1f32, 0.2, 1.0 / 3.0, 65504.0, 1e-3];
    g.constant(Tensor::from_vec(vec![5], vals.map(f16::from_f32).to_vec()).unwrap())
        .unwrap();
    g.constant(Tensor::from_vec(vec![5], vals.map(bf16::from_f32).to_vec()).unwrap())
        .unwrap();
    let text = g.to_string();
    assert!(
        text.contains("constant [0.1, 0.2, 0.3333, 65500.0, 0.001] : f16[5]"),
        "{text}"
    );
    assert!(
        text.contains("constant [0.1, 0.2, 0.334, 65500.0, 0.001] : bf16[5]"),
        "{text}"
    );
    round_trip(&g);
}

#[test]
fn names_with_special_characters_round_trip() {
    let mut g = Graph::new();
    let names = [
        "model.layers.0.self_attn.q_proj.weight",
        "with space",
        "quote\"inside",
        "back\\slash",
        "new\nline\r\ttab",
        "control\u{1}\u{7f}\u{85}",
        "unicode é ß 日本 🚀",
        "hash # not a comment",
        "",
        "=%0 : f32[] }",
    ];
    for name in names {
        let id = g.input(name, DType::F32, shape("2")).unwrap();
        g.set_output(name, id).unwrap();
        g.state(name, DType::I8, shape("1")).unwrap();
        g.set_state_update(name, NodeId(id.0 + 1)).unwrap();
    }
    let text = g.to_string();
    assert_eq!(text.lines().count(), names.len() * 4 + 2, "{text}");
    round_trip(&g);
}

#[test]
fn comments_blank_lines_and_crlf() {
    let text = "# a graph\r\n\r\ngraph {   # opening\r\n\
                \t%0 = input \"x#1\" : f32[seq, 4]  # not part of the name\r\n\
                \n\
                  %1 = reduce.sum %0 axes=[1] : f32[seq]\n\
                  %2=exp %1:f32[seq]\n\
                  output \"y\" = %2 # done\n\
                } # closing\n\
                # trailing comment\n";
    let g = parse_graph(text).unwrap();
    assert_eq!(g.nodes().len(), 3);
    assert_eq!(g.inputs(), vec![("x#1", NodeId(0))]);
    assert_eq!(g.output("y"), Some(NodeId(2)));
    round_trip(&g);
    assert_eq!(text.parse::<Graph>().unwrap(), g);
}

#[test]
fn empty_graph() {
    let g = Graph::new();
    assert_eq!(g.to_string(), "graph {\n}");
    round_trip(&g);
    assert_eq!(parse_graph("graph {}").unwrap_err().line, 1);
}

#[test]
fn hand_written_syntax_variants() {
    // Attributes in any order, spaces around `=`, dims written differently from the printer.
    let text = "graph {
      %0 = input \"x\" : f32[batch, seq, 64]
      %1 = slice %0 step=2 end=(seq-1) axis = 1 start=1 : f32[batch, (seq + 1) // 2 - 1, 64]
      %2 = matmul %0 , %0 trans_b : f32[batch, seq, seq]
      %3 = constant [ [ 1 , 2.5 ] ,[inf,-0.0] ] : f64[2, 2]
      %4 = full 1e-3 : f32[2 * seq]
    }";
    let g = parse_graph(text).unwrap();
    assert_eq!(
        g.node(NodeId(1)).op,
        Op::Slice {
            axis: 1,
            start: Dim::constant(1),
            end: sym("seq") - 1,
            step: 2
        }
    );
    round_trip(&g);
}

// ---------------------------------------------------------------------------------------------
// Snapshots

#[test]
fn snapshot_mlp() {
    insta::assert_snapshot!("mlp", mlp().to_string());
}

#[test]
fn snapshot_attention() {
    insta::assert_snapshot!("attention", attention().to_string());
}

#[test]
fn snapshot_kv_cache_update() {
    insta::assert_snapshot!("kv_cache_update", kv_cache_update().to_string());
}

#[test]
fn snapshot_every_dtype_constants() {
    insta::assert_snapshot!("every_dtype_constants", every_dtype_constants().to_string());
}

// ---------------------------------------------------------------------------------------------
// Parse errors

#[test]
fn error_unknown_op() {
    let e = assert_error(
        "graph {\n  %0 = input \"x\" : f32[4]\n  %1 = frobnicate %0 : f32[4]\n}",
        3,
        8,
        "unknown op `frobnicate`",
    );
    assert_eq!(e.kind, ParseErrorKind::UnknownOp("frobnicate".into()));
}

#[test]
fn error_undefined_node() {
    let e = assert_error(
        "graph {\n  %0 = input \"x\" : f32[4]\n  %1 = add %0, %7 : f32[4]\n}",
        3,
        16,
        "undefined node %7 (only %0 is defined so far)",
    );
    assert_eq!(e.kind, ParseErrorKind::UndefinedNode { id: 7, defined: 1 });
    // Also in outputs, and for a node referring to itself.
    assert_error(
        "graph {\n  %0 = input \"x\" : f32[4]\n  %1 = neg %0 : f32[4]\n  output \"y\" = %2\n}",
        4,
        16,
        "undefined node %2 (only %0 to %1 are defined so far)",
    );
    assert_error(
        "graph {\n  %0 = neg %0 : f32[4]\n}",
        2,
        12,
        "undefined node %0 (no node is defined yet)",
    );
}

#[test]
fn error_out_of_order_id() {
    let e = assert_error(
        "graph {\n  %0 = input \"x\" : f32[4]\n  %2 = exp %0 : f32[4]\n}",
        3,
        3,
        "expected %1, found %2",
    );
    assert_eq!(
        e.kind,
        ParseErrorKind::NodeOrder {
            expected: 1,
            found: 2
        }
    );
    assert_error(
        "graph {\n  %1 = input \"x\" : f32[4]\n}",
        2,
        3,
        "node ids must count up from %0: expected %0, found %1",
    );
}

#[test]
fn error_type_annotation_mismatch() {
    let e = assert_error(
        "graph {\n  %0 = input \"x\" : f32[4]\n  %1 = exp %0 : f32[5]\n}",
        3,
        17,
        "the annotated type f32[5] does not match the inferred type f32[4]",
    );
    assert_eq!(
        e.kind,
        ParseErrorKind::TypeMismatch {
            annotated: kiln_ir::TensorType::new(DType::F32, shape("5")),
            inferred: kiln_ir::TensorType::new(DType::F32, shape("4")),
        }
    );
    // A lying dtype.
    assert_error(
        "graph {\n  %0 = input \"x\" : f32[4]\n  %1 = lt %0, %0 : f32[4]\n}",
        3,
        20,
        "annotated type f32[4] does not match the inferred type bool[4]",
    );
}

#[test]
fn error_bad_dim() {
    let e = assert_error(
        "graph {\n  %0 = input \"x\" : f32[seq +, 4]\n}",
        2,
        29,
        "bad dimension `seq +`: expected a number, a symbol or `(`",
    );
    assert!(matches!(e.kind, ParseErrorKind::BadDim { .. }));
    assert_error(
        "graph {\n  %0 = input \"x\" : f32[4]\n  %1 = slice %0 axis=0 start=0 end=(2 $ 1) step=1 : f32[2]\n}",
        3,
        39,
        "bad dimension `(2 $ 1)`: expected `)`",
    );
    assert_error(
        "graph {\n  %0 = input \"x\" : f32[4, ]\n}",
        2,
        27,
        "bad dimension ``",
    );
}

#[test]
fn error_unterminated_string() {
    let e = assert_error(
        "graph {\n  %0 = input \"x : f32[4]\n}",
        2,
        14,
        "unterminated string",
    );
    assert_eq!(e.kind, ParseErrorKind::Syntax("unterminated string".into()));
    assert_error(
        "graph {\n  %0 = input \"x\" : f32[4]\n  output \"y\\\" = %0\n}",
        3,
        10,
        "unterminated string",
    );
}

#[test]
fn error_bad_dtype() {
    let e = assert_error(
        "graph {\n  %0 = input \"x\" : f33[4]\n}",
        2,
        20,
        "unknown dtype `f33`",
    );
    assert_eq!(e.kind, ParseErrorKind::UnknownDType("f33".into()));
    assert_error(
        "graph {\n  %0 = input \"x\" : f32[4]\n  %1 = cast %0 to=float : f32[4]\n}",
        3,
        19,
        "unknown dtype `float`",
    );
}

#[test]
fn error_wrong_operand_count() {
    let e = assert_error(
        "graph {\n  %0 = input \"x\" : f32[4]\n  %1 = add %0 : f32[4]\n}",
        3,
        8,
        "add: expected 2 operand(s), got 1",
    );
    assert_eq!(
        e.ir_error(),
        Some(&IrError::Arity {
            op: "add".into(),
            expected: "2".into(),
            got: 1
        })
    );
    assert_error(
        "graph {\n  %0 = input \"x\" : f32[4]\n  %1 = concat axis=0 : f32[4]\n}",
        3,
        8,
        "concat: expected at least 1 operand(s), got 0",
    );
    assert_error(
        "graph {\n  %0 = input \"x\" : f32[4]\n  %1 = input \"y\" %0 : f32[4]\n}",
        3,
        8,
        "input: expected 0 operand(s), got 1",
    );
}

#[test]
fn error_node_does_not_type_check() {
    let e = assert_error(
        "graph {\n  %0 = input \"x\" : f32[4]\n  %1 = permute %0 perm=[1, 0] : f32[4]\n}",
        3,
        8,
        "permute: [1, 0] is not a permutation",
    );
    assert!(matches!(
        e.kind,
        ParseErrorKind::Ir(IrError::Attribute { .. })
    ));
}

#[test]
fn error_attributes() {
    let pre = "graph {\n  %0 = input \"x\" : f32[4]\n";
    let cases: &[(&str, usize, &str)] = &[
        (
            "  %1 = reduce.sum %0 axes=[0] keepdims : f32[]",
            31,
            "`keepdims` is not an attribute of reduce.sum (it takes axes, keepdim)",
        ),
        (
            "  %1 = reduce.sum %0 keepdim : f32[1]",
            30,
            "reduce.sum needs the attribute `axes=...`",
        ),
        (
            "  %1 = flip %0 axes=[0] axes=[0] : f32[4]",
            25,
            "attribute `axes` is given twice",
        ),
        (
            "  %1 = matmul %0, %0 trans_a=1 : f32[4]",
            30,
            "`trans_a` is a flag and takes no value",
        ),
        (
            "  %1 = concat %0 axis : f32[4]",
            18,
            "`axis` needs a value: `axis=...`",
        ),
        (
            "  %1 = concat %0 axis=-1 : f32[4]",
            23,
            "expected a non-negative integer, found `-1`",
        ),
        (
            "  %1 = exp %0 axis=0 : f32[4]",
            15,
            "`axis` is not an attribute of exp (it takes none)",
        ),
        (
            "  %1 = pad %0 pads=[0, 1] value=0.0 : f32[5]",
            21,
            "expected a pair `(before, after)`, found `0`",
        ),
        (
            "  %1 = scatter %0, %0, %0 axis=0 reduce=mul : f32[4]",
            41,
            "expected `assign` or `add`, found `mul`",
        ),
        (
            "  %1 = exp %0",
            14,
            "expected `:` and the node's type, found the end of the line",
        ),
        (
            "  %1 = exp %0 : f32[4] extra",
            24,
            "unexpected `extra` at the end of the line",
        ),
    ];
    for &(line, column, fragment) in cases {
        assert_error(&format!("{pre}{line}\n}}"), 3, column, fragment);
    }
}

#[test]
fn error_constants() {
    let pre = "graph {\n";
    let cases: &[(&str, usize, &str)] = &[
        (
            "  %0 = constant [1, 2, 3] : f32[2]",
            25,
            "expected 2 entries along axis 0 of the constant, found 3",
        ),
        (
            "  %0 = constant [[1, 2], [3]] : f32[2, 2]",
            28,
            "expected 2 entries along axis 1 of the constant, found 1",
        ),
        (
            "  %0 = constant [300] : u8[1]",
            18,
            "`300` is not a valid u8 value",
        ),
        (
            "  %0 = constant [1, x] : f32[2]",
            21,
            "`x` is not a valid f32 value",
        ),
        (
            "  %0 = constant [nan(0x3f800000)] : f32[1]",
            18,
            "`nan(0x3f800000)` is not the bit pattern of a NaN",
        ),
        (
            "  %0 = constant [1, 0] : bool[2]",
            18,
            "`1` is not a valid bool value",
        ),
        (
            "  %0 = constant [1] : f32[seq]",
            23,
            "a constant needs a concrete, non-negative shape, not [seq]",
        ),
        (
            "  %0 = constant 0x00ff : q4_0[1, 32]",
            17,
            "needs 18 bytes, the data has 2",
        ),
        (
            "  %0 = constant 0x0 : q8_0[1, 32]",
            17,
            "expected an even number of hex digits",
        ),
        (
            "  %0 = constant [1.0] : f32[]",
            17,
            "a rank-0 constant is written as a bare value",
        ),
        (
            "  %0 = full 1.5 : i32[2]",
            8,
            "full: value 1.5 does not fit dtype i32",
        ),
        ("  %0 = full one : f32[2]", 13, "`one` is not a number"),
    ];
    for &(line, column, fragment) in cases {
        assert_error(&format!("{pre}{line}\n}}"), 2, column, fragment);
    }
}

#[test]
fn error_structure() {
    assert_error("", 1, 1, "expected `graph {`, found the end of the input");
    assert_error("grph {\n}", 1, 1, "expected `graph {`");
    assert_error("graph\n{\n}", 1, 6, "expected `{` after `graph`");
    assert_error(
        "graph {\n  %0 = input \"x\" : f32[4]\n",
        3,
        1,
        "missing the closing `}` of the graph",
    );
    assert_error(
        "graph {\n}\n%0 = input \"x\" : f32[4]",
        3,
        1,
        "unexpected text after the closing `}` of the graph",
    );
    assert_error(
        "graph {\n  x = 1\n}",
        2,
        3,
        "expected a node `%N = ...`, `output`, `state_update` or `}`, found `x`",
    );
    assert_error(
        "graph {\n  %0 = input \"a\\qb\" : f32[4]\n}",
        2,
        16,
        "unknown escape `\\q` in string",
    );
    assert_error(
        "graph {\n  %0 = input \"x\" : f32[4]\n  output \"y\" = %0\n  output \"y\" = %0\n}",
        4,
        10,
        "duplicate output name `y`",
    );
    assert_error(
        "graph {\n  %0 = state \"s\" : f32[4]\n  %1 = input \"x\" : f32[5]\n  state_update \"s\" = %1\n}",
        4,
        22,
        "state `s` has type f32[4] but its update has type f32[5]",
    );
    assert_error(
        "graph {\n  %0 = input \"x\" : f32[4]\n  %1 = input \"x\" : f32[4]\n}",
        3,
        8,
        "duplicate input name `x`",
    );
    // Columns count characters, not bytes.
    assert_error(
        "graph {\n  %0 = input \"日本\" : f33[4]\n}",
        2,
        21,
        "unknown dtype `f33`",
    );
}

#[test]
fn deep_nesting_does_not_overflow_the_stack() {
    let (open, close) = ("(".repeat(100_000), ")".repeat(100_000));
    // The shape's first dim starts at column 24; the 65th `(` is too deep.
    assert_error(
        &format!("graph {{\n  %0 = input \"x\" : f32[{open}seq{close}]\n}}"),
        2,
        24 + 64,
        "expression nested too deeply",
    );
    let minus = "-".repeat(100_000);
    parse_err(&format!("graph {{\n  %0 = input \"x\" : f32[{minus}1]\n}}"));
    let lists = "[".repeat(100_000);
    let dims = vec!["1"; 50_000].join(", ");
    parse_err(&format!(
        "graph {{\n  %0 = constant {lists} : f32[{dims}]\n}}"
    ));
}

// ---------------------------------------------------------------------------------------------
// Random graphs

const SYMBOLS: [&str; 3] = ["batch", "seq", "past"];

fn random_dim(rng: &mut Rng) -> Dim {
    match rng.below(8) {
        0..=2 => sym(SYMBOLS[rng.below(3)]),
        3 => sym("seq") + sym("past"),
        4 => sym("seq") * 2,
        _ => Dim::constant([1, 2, 3, 4][rng.below(4)]),
    }
}

fn random_shape(rng: &mut Rng) -> Shape {
    let rank = rng.below(4);
    Shape((0..rank).map(|_| random_dim(rng)).collect())
}

fn random_plain(rng: &mut Rng) -> DType {
    DType::PLAIN[rng.below(DType::PLAIN.len())]
}

fn random_scalar(rng: &mut Rng, d: DType) -> Scalar {
    match d {
        DType::Bool => Scalar::Bool(rng.next() & 1 == 1),
        d if d.is_float() && rng.below(3) > 0 => {
            let bits = rng.next();
            Scalar::Float(if rng.below(2) == 0 {
                f64::from_bits(bits)
            } else {
                (bits % 1000) as f64 / 8.0
            })
        }
        d => {
            let (lo, hi) = d.int_range().unwrap_or((-1000, 1000));
            let span = (hi as i128 - lo as i128 + 1) as u128;
            Scalar::Int((lo as i128 + (rng.next() as u128 % span) as i128) as i64)
        }
    }
}

/// Builds a graph from a seed by trying random ops on random nodes, keeping those that
/// type-check.
fn random_graph(seed: u64, steps: usize) -> Graph {
    let mut rng = Rng(seed);
    let mut g = Graph::new();
    g.input("x", DType::F32, shape("batch, seq, 4")).unwrap();
    let mut names = 0;
    for _ in 0..steps {
        let n = g.nodes().len();
        let a = NodeId(rng.below(n) as u32);
        let ty = g.ty(a).clone();
        let rank = ty.rank();
        let mut fresh_name = |rng: &mut Rng| {
            names += 1;
            let fancy = ["", " w.eight", "\"q\"", "é\n", "#"];
            format!("n{names}{}", fancy[rng.below(fancy.len())])
        };
        let (op, inputs) = match rng.below(25) {
            0 => {
                let d = random_plain(&mut rng);
                (
                    Op::Input {
                        name: fresh_name(&mut rng),
                        dtype: d,
                        shape: random_shape(&mut rng),
                    },
                    vec![],
                )
            }
            1 => {
                let q = QuantType::ALL[rng.below(QuantType::ALL.len())];
                let (dtype, mut shape) = if rng.below(2) == 0 {
                    (DType::Quant(q), random_shape(&mut rng))
                } else {
                    (random_plain(&mut rng), random_shape(&mut rng))
                };
                if dtype.is_quantized() {
                    shape.0.push(Dim::from(q.block_size() * (1 + rng.below(2))));
                }
                (
                    Op::Param {
                        name: fresh_name(&mut rng),
                        dtype,
                        shape,
                    },
                    vec![],
                )
            }
            2 => (
                Op::State {
                    name: fresh_name(&mut rng),
                    dtype: random_plain(&mut rng),
                    shape: random_shape(&mut rng),
                },
                vec![],
            ),
            3 => {
                let d = random_plain(&mut rng);
                (
                    Op::Full {
                        value: random_scalar(&mut rng, d),
                        dtype: d,
                        shape: random_shape(&mut rng),
                    },
                    vec![],
                )
            }
            4 => {
                let d = if rng.below(4) == 0 {
                    DType::Quant(QuantType::ALL[rng.below(11)])
                } else {
                    random_plain(&mut rng)
                };
                let mut dims: Vec<usize> = (0..rng.below(4)).map(|_| rng.below(4)).collect();
                if let DType::Quant(q) = d {
                    dims.push(q.block_size());
                }
                let t = random_tensor(&mut rng, d, &dims);
                (Op::Constant { value: t.into() }, vec![])
            }
            5 => {
                let s = random_shape(&mut rng);
                let dtype = [DType::I64, DType::I32, DType::F32, DType::U8][rng.below(4)];
                (
                    Op::Iota {
                        axis: rng.below(s.rank().max(1)),
                        dtype,
                        shape: s,
                    },
                    vec![],
                )
            }
            6 => (Op::Unary(UnaryOp::ALL[rng.below(16)]), vec![a]),
            7 | 8 => {
                let same: Vec<usize> = (0..n).filter(|&i| g.nodes()[i].ty == ty).collect();
                let b = NodeId(same[rng.below(same.len())] as u32);
                (Op::Binary(BinaryOp::ALL[rng.below(17)]), vec![a, b])
            }
            9 => {
                let cond = g.push(Op::Binary(BinaryOp::Eq), vec![a, a]);
                match cond {
                    Ok(c) => (Op::Where, vec![c, a, a]),
                    Err(_) => continue,
                }
            }
            10 => (
                Op::Cast {
                    to: random_plain(&mut rng),
                },
                vec![a],
            ),
            11 => {
                let mask = rng.next();
                let mut axes: Vec<usize> = (0..rank).filter(|i| mask >> i & 1 == 1).collect();
                let op = ReduceOp::ALL[rng.below(5)];
                if op == ReduceOp::ArgMax {
                    axes.truncate(1);
                }
                (
                    Op::Reduce {
                        op,
                        axes,
                        keepdim: rng.below(2) == 0,
                    },
                    vec![a],
                )
            }
            12 => {
                let mut dims = ty.shape.0.clone();
                if rng.below(2) == 0 {
                    dims = vec![ty.shape.numel()];
                } else {
                    dims.insert(rng.below(rank + 1), Dim::constant(1));
                }
                (Op::Reshape { shape: Shape(dims) }, vec![a])
            }
            13 => {
                let mut perm: Vec<usize> = (0..rank).collect();
                for i in (1..rank).rev() {
                    perm.swap(i, rng.below(i + 1));
                }
                (Op::Permute { perm }, vec![a])
            }
            14 => {
                let mut dims = ty.shape.0.clone();
                for d in &mut dims {
                    if *d == 1 && rng.below(2) == 0 {
                        *d = random_dim(&mut rng);
                    }
                }
                if rng.below(2) == 0 {
                    dims.insert(0, random_dim(&mut rng));
                }
                (Op::Expand { shape: Shape(dims) }, vec![a])
            }
            15 => {
                let axis = rng.below(rank.max(1));
                let size = ty.shape.0.get(axis).cloned().unwrap_or(Dim::constant(1));
                let start = Dim::constant(rng.below(2) as i64);
                let end = if rng.below(2) == 0 { size } else { size - 1 };
                (
                    Op::Slice {
                        axis,
                        start,
                        end,
                        step: 1 + rng.below(3) as i64,
                    },
                    vec![a],
                )
            }
            16 => {
                let pads = (0..rank)
                    .map(|_| (random_dim(&mut rng), Dim::constant(rng.below(3) as i64)))
                    .collect();
                (
                    Op::Pad {
                        pads,
                        value: random_scalar(&mut rng, ty.dtype),
                    },
                    vec![a],
                )
            }
            17 => (
                Op::Concat {
                    axis: rng.below(rank.max(1)),
                },
                vec![a; 1 + rng.below(3)],
            ),
            18 => {
                let axes = (0..rank).filter(|_| rng.below(2) == 0).collect();
                (Op::Flip { axes }, vec![a])
            }
            19 => {
                let len = random_dim(&mut rng);
                match g.iota(0, DType::I64, Shape(vec![len])) {
                    Ok(idx) => (
                        Op::IndexSelect {
                            axis: rng.below(rank.max(1)),
                        },
                        vec![a, idx],
                    ),
                    Err(_) => continue,
                }
            }
            20 | 21 => {
                let axis = rng.below(rank.max(1));
                match g.iota(axis, DType::I32, ty.shape.clone()) {
                    Ok(idx) if rng.below(2) == 0 => (Op::Gather { axis }, vec![a, idx]),
                    Ok(idx) => {
                        let reduce = [ScatterReduce::Assign, ScatterReduce::Add][rng.below(2)];
                        (Op::Scatter { axis, reduce }, vec![a, idx, a])
                    }
                    Err(_) => continue,
                }
            }
            22 => {
                let axis = rng.below(rank.max(1));
                let Some(size) = ty.shape.0.get(axis).cloned() else {
                    continue;
                };
                let src = g.push(
                    Op::Slice {
                        axis,
                        start: Dim::constant(1),
                        end: size,
                        step: 1,
                    },
                    vec![a],
                );
                match src {
                    Ok(src) => (
                        Op::SliceUpdate {
                            axis,
                            start: Dim::constant(rng.below(2) as i64),
                        },
                        vec![a, src],
                    ),
                    Err(_) => continue,
                }
            }
            23 => {
                let b = NodeId(rng.below(n) as u32);
                (
                    Op::MatMul {
                        trans_a: rng.below(2) == 0,
                        trans_b: rng.below(2) == 0,
                    },
                    vec![a, b],
                )
            }
            _ => {
                if rng.below(2) == 0 {
                    let _ = g.set_output(&fresh_name(&mut rng), a);
                } else {
                    let states: Vec<String> =
                        g.states().iter().map(|(s, _)| s.to_string()).collect();
                    if let Some(name) = states.get(rng.below(states.len())) {
                        let _ = g.set_state_update(name, a);
                    }
                }
                continue;
            }
        };
        let _ = g.push(op, inputs);
    }
    g
}

#[test]
fn random_graphs_are_rich() {
    // The generator must reach most ops, or the property test below proves little.
    let mut kinds = std::collections::BTreeSet::new();
    let mut outputs = 0;
    for seed in 0..64 {
        let g = random_graph(seed, 60);
        kinds.extend(g.nodes().iter().map(|n| match &n.op {
            Op::Unary(_) => "unary".to_string(),
            Op::Binary(_) => "binary".to_string(),
            Op::Reduce { .. } => "reduce".to_string(),
            op => op.name(),
        }));
        outputs += g.outputs().len() + g.state_updates().len();
    }
    assert_eq!(kinds.len(), 23, "op kinds reached: {kinds:?}");
    assert!(outputs > 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_graphs_round_trip(seed in any::<u64>(), steps in 0usize..60) {
        let g = random_graph(seed, steps);
        let text = g.to_string();
        let back = parse_graph(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(&back, &g, "{}", text);
        prop_assert_eq!(back.to_string(), text);
    }

    #[test]
    fn arbitrary_strings_do_not_panic(text in any::<String>()) {
        let _ = parse_graph(&text);
        let _ = parse_graph(&format!("graph {{\n{text}\n}}"));
        let _ = parse_graph(&format!("graph {{\n  %0 = {text}\n}}"));
    }

    #[test]
    fn token_soup_does_not_panic(
        text in "[graph{}%=:,()\\[\\]\"\\\\#0-9 a-z.+*/_\n-]{0,200}",
    ) {
        let _ = parse_graph(&text);
        let _ = parse_graph(&format!("graph {{\n  %0 = input \"x\" : f32[seq, 4]\n{text}\n}}"));
        let _ = parse_graph(&format!("graph {{\n  %0 = constant {text}\n}}"));
    }

    #[test]
    fn mutated_texts_do_not_panic(
        seed in any::<u64>(),
        steps in 1usize..40,
        edits in prop::collection::vec((0u8..5, any::<usize>(), any::<char>()), 1..6),
    ) {
        let text = random_graph(seed, steps).to_string();
        let mut chars: Vec<char> = text.chars().collect();
        const INTERESTING: &[char] = &['%', '=', ':', ',', '[', ']', '(', ')', '"', '\\', '#', '-', '0', '9', '\n', ' '];
        for (kind, at, ch) in edits {
            if chars.is_empty() {
                break;
            }
            let i = at % chars.len();
            match kind {
                0 => { chars.remove(i); }
                1 => chars.insert(i, ch),
                2 => chars.insert(i, INTERESTING[at % INTERESTING.len()]),
                3 => chars[i] = INTERESTING[(at / 7) % INTERESTING.len()],
                _ => {
                    let j = (at / 3) % chars.len();
                    let (lo, hi) = (i.min(j), i.max(j));
                    let span: Vec<char> = chars[lo..hi].to_vec();
                    chars.splice(lo..lo, span);
                }
            }
        }
        let mutated: String = chars.into_iter().collect();
        let _ = parse_graph(&mutated);
    }
}
