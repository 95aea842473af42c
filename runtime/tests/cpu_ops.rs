//! Every op of the IR on the CPU backend against the reference interpreter, for every dtype
//! the op takes: odd sizes (1, 3, 17, 31, 4097), broadcasting, symbolic dims compiled once
//! and run with several bindings, NaN/infinity/signed-zero/subnormal values, integer
//! wrapping and division by zero, casts between all dtypes, all 11 quantized types where an
//! op takes them; optimizer off and on, 1 and 2 threads (the 4097-row runs are large enough
//! for the runtime to split them across threads).
//!
//! Elementwise results, views, indexing and casts must be bit-identical; accumulations (sum,
//! prod, matmul, scatter-add) meet the scale-aware bound of `common::Tol::Accum`.

mod common;

use common::{check_accum, check_all, quant_tensor, random, tensor_f64, tensor_i64, Feeds, Rng};
use kiln_ir::{
    BinaryOp, DType, Dim, Graph, QuantType, ReduceOp, Scalar, ScatterReduce, Shape, UnaryOp,
};
use proptest::prelude::*;

/// Proptest settings: `n` cases, no failure files.
fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Row counts every elementwise test runs with (one compilation, symbol `n`).
const ROWS: [usize; 5] = [1, 3, 17, 31, 4097];

fn shape(dims: &[Dim]) -> Shape {
    Shape::new(dims.to_vec())
}

fn n() -> Dim {
    Dim::from("n")
}

/// Integer values at the edges of every integer dtype (wrapped when made into a tensor).
const INT_LIMITS: [i64; 12] = [
    -32768,
    32767,
    65535,
    -2147483648,
    2147483647,
    4294967295,
    -129,
    128,
    256,
    i64::MIN,
    -1,
    0,
];

#[test]
fn unary_ops_on_every_dtype() {
    let mut rng = Rng(11);
    let mut accepted = 0;
    for op in UnaryOp::ALL {
        let mut for_op = 0;
        for dt in DType::PLAIN {
            let mut g = Graph::new();
            let x = g.input("x", dt, shape(&[n(), Dim::from(5)])).unwrap();
            let Ok(y) = g.unary(op, x) else { continue };
            g.set_output("y", y).unwrap();
            let runs: Vec<Feeds> = ROWS
                .iter()
                .map(|&r| Feeds::new().input("x", random(dt, &[r, 5], &mut rng, 4.0, true)))
                .collect();
            check_all(
                &format!("{} {dt}", op.name()),
                &g,
                &runs,
                common::Tol::Exact,
            );
            for_op += 1;
        }
        assert!(for_op > 0, "{} takes no dtype", op.name());
        accepted += for_op;
    }
    // 12 float-only ops on 4 float dtypes; neg/abs/sign on floats and integers; not on
    // integers and bool.
    println!("unary: {accepted} op/dtype pairs");
    assert!(accepted >= 12 * 4 + 3 * 4 + 7, "{accepted}");
}

/// Second operands that hit the special cases: division and modulo by zero and by -1,
/// NaN, infinities, signed zeros.
fn divisor_row(dt: DType) -> Vec<f64> {
    if dt.is_float() {
        vec![0.0, -0.0, f64::INFINITY, f64::NAN, -2.5]
    } else {
        vec![0.0, -1.0, 1.0, -7.0, 3.0]
    }
}

#[test]
fn binary_ops_on_every_dtype_with_broadcasting() {
    let mut rng = Rng(12);
    let mut accepted = 0;
    for op in BinaryOp::ALL {
        let mut for_op = 0;
        for dt in DType::PLAIN {
            // a: [n, 5]; b: [n, 5] and a broadcast row [5].
            let mut g = Graph::new();
            let a = g.input("a", dt, shape(&[n(), Dim::from(5)])).unwrap();
            let b = g.input("b", dt, shape(&[n(), Dim::from(5)])).unwrap();
            let row = g.input("row", dt, shape(&[Dim::from(5)])).unwrap();
            let Ok(y) = g.binary(op, a, b) else { continue };
            let z = g.binary(op, a, row).unwrap();
            let w = g.binary(op, row, a).unwrap();
            g.set_output("y", y).unwrap();
            g.set_output("z", z).unwrap();
            g.set_output("w", w).unwrap();
            let runs: Vec<Feeds> = ROWS
                .iter()
                .map(|&r| {
                    let mut av = random(dt, &[r, 5], &mut rng, 4.0, true);
                    if !dt.is_float() && r > 1 {
                        // Every dtype's minimum and maximum against every divisor.
                        let mut v = av.to_i64_vec().unwrap();
                        for (i, x) in INT_LIMITS.iter().enumerate().take(v.len()) {
                            v[i] = *x;
                        }
                        av = tensor_i64(dt, &[r, 5], &v);
                    }
                    Feeds::new()
                        .input("a", av)
                        .input("b", random(dt, &[r, 5], &mut rng, 4.0, true))
                        .input("row", tensor_f64(dt, &[5], &divisor_row(dt)))
                })
                .collect();
            check_all(
                &format!("{} {dt}", op.name()),
                &g,
                &runs,
                common::Tol::Exact,
            );
            for_op += 1;
        }
        assert!(for_op > 0, "{} takes no dtype", op.name());
        accepted += for_op;
    }
    println!("binary: {accepted} op/dtype pairs");
    assert!(accepted >= 100, "{accepted}");
}

#[test]
fn where_on_every_dtype() {
    let mut rng = Rng(13);
    for dt in DType::PLAIN {
        let mut g = Graph::new();
        let c = g
            .input("c", DType::Bool, shape(&[n(), Dim::from(1)]))
            .unwrap();
        let a = g.input("a", dt, shape(&[n(), Dim::from(7)])).unwrap();
        let b = g.input("b", dt, shape(&[Dim::from(7)])).unwrap();
        let y = g.where_(c, a, b).unwrap();
        g.set_output("y", y).unwrap();
        let runs: Vec<Feeds> = ROWS
            .iter()
            .map(|&r| {
                Feeds::new()
                    .input("c", random(DType::Bool, &[r, 1], &mut rng, 1.0, true))
                    .input("a", random(dt, &[r, 7], &mut rng, 4.0, true))
                    .input("b", random(dt, &[7], &mut rng, 4.0, true))
            })
            .collect();
        check_all(&format!("where {dt}"), &g, &runs, common::Tol::Exact);
    }
}

/// Values that probe every cast: float-to-integer saturation and truncation, NaN to 0,
/// overflow to infinity when narrowing floats, rounding ties, wrapping between integers.
const CAST_VALUES: [f64; 30] = [
    0.0,
    -0.0,
    0.5,
    -0.5,
    1.5,
    -1.9,
    2.5,
    127.9,
    128.0,
    -129.0,
    255.5,
    256.0,
    -1.0,
    32767.5,
    -32769.0,
    65504.0,
    65520.0,
    70000.0,
    2147483647.0,
    2147483648.0,
    -2147483649.0,
    4294967296.0,
    9.3e18,
    -9.3e18,
    1e30,
    f64::INFINITY,
    f64::NEG_INFINITY,
    f64::NAN,
    1.000_000_119_209_29, // 1 + 2^-23 (as f32): rounds to 1 in f16 and bf16
    6e-8,
];

#[test]
fn casts_between_every_dtype() {
    let mut rng = Rng(14);
    let mut pairs = 0;
    for from in DType::PLAIN {
        let mut g = Graph::new();
        let x = g.input("x", from, shape(&[n()])).unwrap();
        for to in DType::PLAIN {
            let y = g.cast(x, to).unwrap();
            g.set_output(&format!("to_{to}"), y).unwrap();
            pairs += 1;
        }
        let runs: Vec<Feeds> = [30usize, 31, 4097]
            .iter()
            .map(|&r| {
                let t = if r == 30 {
                    if from.is_float() || from.is_bool() {
                        tensor_f64(from, &[30], &CAST_VALUES)
                    } else {
                        let mut v: Vec<i64> = INT_LIMITS.to_vec();
                        v.extend(common::INT_EDGES);
                        v.extend([300, -300, 1 << 31, (1 << 53) + 1]);
                        tensor_i64(from, &[30], &v)
                    }
                } else {
                    random(from, &[r], &mut rng, 1e5, true)
                };
                Feeds::new().input("x", t)
            })
            .collect();
        check_all(&format!("cast from {from}"), &g, &runs, common::Tol::Exact);
    }
    assert_eq!(pairs, 121);
}

#[test]
fn casts_from_every_quantized_type() {
    let mut rng = Rng(15);
    for q in QuantType::ALL {
        let mut g = Graph::new();
        let dt = DType::Quant(q);
        let w = g
            .param("w", dt, shape(&[Dim::from(3), Dim::from(512)]))
            .unwrap();
        for to in DType::PLAIN {
            let y = g.cast(w, to).unwrap();
            g.set_output(&format!("to_{to}"), y).unwrap();
        }
        let f = Feeds::new().param("w", quant_tensor(q, &[3, 512], &mut rng));
        check_all(
            &format!("cast from {}", q.name()),
            &g,
            &[f],
            common::Tol::Exact,
        );
    }
}

/// Every reduction over every set of axes of a `[n, 17, 5]` tensor, kept and dropped.
#[test]
fn reductions_on_every_dtype_and_axis_set() {
    let mut rng = Rng(16);
    let axis_sets: [&[usize]; 7] = [&[0], &[1], &[2], &[0, 2], &[1, 2], &[0, 1], &[0, 1, 2]];
    let mut count = 0;
    for op in ReduceOp::ALL {
        for dt in DType::PLAIN {
            let mut g = Graph::new();
            let x = g
                .input("x", dt, shape(&[n(), Dim::from(17), Dim::from(5)]))
                .unwrap();
            let mut outs = 0;
            for axes in axis_sets {
                if op == ReduceOp::ArgMax && axes.len() > 1 {
                    continue;
                }
                for keep in [false, true] {
                    let Ok(y) = g.reduce(op, x, axes, keep) else {
                        continue;
                    };
                    g.set_output(&format!("{axes:?}{keep}"), y).unwrap();
                    outs += 1;
                }
            }
            if outs == 0 {
                continue;
            }
            count += 1;
            // Edge values (NaN, infinities, signed zeros) in some runs, plain ones in others.
            let runs: Vec<Feeds> = [1usize, 3, 31]
                .iter()
                .enumerate()
                .map(|(i, &r)| {
                    let scale = if op == ReduceOp::Prod { 1.5 } else { 4.0 };
                    let t = random(dt, &[r, 17, 5], &mut rng, scale, i != 1);
                    Feeds::new().input("x", t)
                })
                .collect();
            let label = format!("reduce {} {dt}", op.name());
            if matches!(op, ReduceOp::Sum | ReduceOp::Prod) {
                check_accum(&label, &g, &runs);
            } else {
                check_all(&label, &g, &runs, common::Tol::Exact);
            }
        }
    }
    println!("reductions: {count} op/dtype pairs");
    assert!(count >= 40, "{count}");
}

/// A sum over an axis of extent 0 is 0 (and a prod 1); an elementwise op on no elements
/// does nothing.
#[test]
fn empty_axes() {
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, shape(&[Dim::from(3), n()]))
        .unwrap();
    let s = g.sum(x, &[1], false).unwrap();
    let p = g.reduce(ReduceOp::Prod, x, &[1], true).unwrap();
    let e = g.exp(x).unwrap();
    g.set_output("s", s).unwrap();
    g.set_output("p", p).unwrap();
    g.set_output("e", e).unwrap();
    let runs: Vec<Feeds> = [0usize, 2]
        .iter()
        .map(|&c| Feeds::new().input("x", tensor_f64(DType::F32, &[3, c], &vec![1.5; 3 * c])))
        .collect();
    check_accum("empty", &g, &runs);
}

#[test]
fn iota_full_and_dim_value_with_symbolic_dims() {
    for dt in DType::PLAIN {
        if dt == DType::Bool {
            continue;
        }
        let mut g = Graph::new();
        let m = Dim::from("m");
        let it0 = g.iota(0, dt, shape(&[n(), m.clone()])).unwrap();
        let it1 = g.iota(1, dt, shape(&[n(), m.clone()])).unwrap();
        let ar = g.arange(n() * 2 + 1, dt).unwrap();
        let v = g.dim_value(n() * m.clone() + 3, dt).unwrap();
        let fill = if dt.is_float() {
            Scalar::Float(0.1)
        } else if dt.is_signed_int() {
            Scalar::Int(-7)
        } else {
            Scalar::Int(7)
        };
        let full = g.full(fill, dt, shape(std::slice::from_ref(&m))).unwrap();
        let big = if dt == DType::I8 { 100 } else { 250 };
        let full_int = g.full(Scalar::Int(big), dt, shape(&[n()])).unwrap();
        // Add an input so the fills meet real data in one kernel too.
        let x = g.input("x", dt, shape(&[n(), m.clone()])).unwrap();
        let sum = g.add(x, it1).unwrap();
        for (name, id) in [
            ("iota0", it0),
            ("iota1", it1),
            ("arange", ar),
            ("dim_value", v),
            ("full", full),
            ("full_int", full_int),
            ("sum", sum),
        ] {
            g.set_output(name, id).unwrap();
        }
        let mut rng = Rng(17);
        let runs: Vec<Feeds> = [(1usize, 1usize), (3, 17), (31, 4), (300, 2)]
            .iter()
            .map(|&(a, b)| {
                Feeds::new()
                    .input("x", random(dt, &[a, b], &mut rng, 3.0, false))
                    .bind("m", b as i64)
            })
            .collect();
        check_all(&format!("fills {dt}"), &g, &runs, common::Tol::Exact);
    }
    let mut g = Graph::new();
    let b = g
        .full(Scalar::Bool(true), DType::Bool, shape(&[n()]))
        .unwrap();
    let x = g.input("x", DType::Bool, shape(&[n()])).unwrap();
    let y = g.binary(BinaryOp::Xor, x, b).unwrap();
    g.set_output("y", y).unwrap();
    let f = Feeds::new().input("x", random(DType::Bool, &[17], &mut Rng(3), 1.0, true));
    check_all("full bool", &g, &[f], common::Tol::Exact);
}

/// One view op applied to `x` of shape `dims` (concrete), chosen by `rng`; returns the new
/// node and shape.
fn random_view(
    g: &mut Graph,
    x: kiln_ir::NodeId,
    dims: &[usize],
    rng: &mut Rng,
) -> (kiln_ir::NodeId, Vec<usize>, String) {
    let rank = dims.len();
    let ax = rng.below(rank as u64) as usize;
    match rng.below(8) {
        0 => {
            // reshape: merge two neighbours, or split an axis by a divisor.
            if rank > 1 && rng.below(2) == 0 && ax + 1 < rank {
                let mut d = dims.to_vec();
                d[ax] *= d.remove(ax + 1);
                let y = g.reshape(x, Shape::new(d.clone())).unwrap();
                (y, d, format!("reshape merge {ax}"))
            } else {
                let div = (2..=dims[ax])
                    .find(|k| dims[ax].is_multiple_of(*k))
                    .unwrap_or(1);
                let mut d = dims.to_vec();
                d[ax] /= div;
                d.insert(ax + 1, div);
                let y = g.reshape(x, Shape::new(d.clone())).unwrap();
                (y, d, format!("reshape split {ax}/{div}"))
            }
        }
        1 => {
            let mut perm: Vec<usize> = (0..rank).collect();
            for i in (1..rank).rev() {
                perm.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let y = g.permute(x, &perm).unwrap();
            let d = perm.iter().map(|&p| dims[p]).collect();
            (y, d, format!("permute {perm:?}"))
        }
        2 => {
            // expand a new size-1 axis to 3 (and a leading axis of 2).
            let mut d = dims.to_vec();
            d.insert(ax, 1);
            let y = g.reshape(x, Shape::new(d.clone())).unwrap();
            d[ax] = 3;
            let mut e = d.clone();
            e.insert(0, 2);
            let y = g.expand(y, Shape::new(e.clone())).unwrap();
            (y, e, format!("expand at {ax}"))
        }
        3 => {
            let size = dims[ax];
            let start = rng.below(size as u64 + 1) as usize;
            let end = start + rng.below((size - start) as u64 + 1) as usize;
            let step = 1 + rng.below(3) as i64;
            let y = g.slice(x, ax, start as i64, end as i64, step).unwrap();
            let mut d = dims.to_vec();
            d[ax] = (end - start).div_ceil(step as usize);
            (y, d, format!("slice {ax} {start}..{end} step {step}"))
        }
        4 => {
            let axes: Vec<usize> = (0..rank).filter(|_| rng.below(2) == 0).collect();
            let y = g.flip(x, &axes).unwrap();
            (y, dims.to_vec(), format!("flip {axes:?}"))
        }
        5 => {
            let pads: Vec<(usize, usize)> = (0..rank)
                .map(|_| (rng.below(3) as usize, rng.below(2) as usize))
                .collect();
            let value = match g.ty(x).dtype {
                DType::Bool => Scalar::Bool(true),
                d if d.is_float() => Scalar::Float(-0.0),
                d if d.is_signed_int() => Scalar::Int(-3),
                _ => Scalar::Int(3),
            };
            let y = g
                .pad(
                    x,
                    pads.iter()
                        .map(|&(a, b)| (Dim::from(a as i64), Dim::from(b as i64)))
                        .collect(),
                    value,
                )
                .unwrap();
            let d = dims
                .iter()
                .zip(&pads)
                .map(|(&s, &(a, b))| s + a + b)
                .collect();
            (y, d, format!("pad {pads:?}"))
        }
        6 => {
            // concat with a flipped copy of itself along `ax`.
            let f = g.flip(x, &[ax]).unwrap();
            let y = g.concat(&[x, f, x], ax).unwrap();
            let mut d = dims.to_vec();
            d[ax] *= 3;
            (y, d, format!("concat {ax}"))
        }
        _ => {
            // A 1-element slice and a size-1 axis broadcast back.
            let size = dims[ax];
            if size == 0 {
                return (x, dims.to_vec(), "none".into());
            }
            let at = rng.below(size as u64) as i64;
            let y = g.slice(x, ax, at, at + 1, 1).unwrap();
            let mut d = dims.to_vec();
            d[ax] = 1;
            let y = g
                .expand(
                    y,
                    Shape::new({
                        let mut e = d.clone();
                        e[ax] = 2;
                        e
                    }),
                )
                .unwrap();
            d[ax] = 2;
            (y, d, format!("pick {ax}@{at}"))
        }
    }
}

const VIEW_DTYPES: [DType; 7] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::F64,
    DType::I8,
    DType::U32,
    DType::Bool,
];

fn random_view_chains_case(dims: Vec<usize>, seed: u64, depth: usize) {
    let mut rng = Rng(seed);
    let dt = VIEW_DTYPES[rng.below(VIEW_DTYPES.len() as u64) as usize];
    let mut g = Graph::new();
    let x = g.input("x", dt, Shape::new(dims.clone())).unwrap();
    let (mut y, mut d) = (x, dims.clone());
    let mut what = Vec::new();
    for _ in 0..depth {
        let (ny, nd, w) = random_view(&mut g, y, &d, &mut rng);
        y = ny;
        d = nd;
        what.push(w);
    }
    g.set_output("view", y).unwrap();
    let consumer = if dt.is_float() {
        g.unary(UnaryOp::Neg, y).unwrap()
    } else {
        g.unary(UnaryOp::Not, y).unwrap()
    };
    g.set_output("neg", consumer).unwrap();
    let f = Feeds::new().input("x", random(dt, &dims, &mut rng, 4.0, true));
    check_all(
        &format!("{dt}{dims:?}: {}", what.join(", ")),
        &g,
        &[f],
        common::Tol::Exact,
    );
}

proptest! {
    #![proptest_config(cases(200))]

    /// Random chains of views (reshape, permute, expand, slice with steps, flip, pad, concat)
    /// on random shapes, stored as they are and fused into an elementwise consumer.
    #[test]
    fn random_view_chains(
        dims in prop::collection::vec(1usize..6, 1..4),
        seed in any::<u64>(),
        depth in 1usize..4,
    ) {
        random_view_chains_case(dims, seed, depth);
    }
}

/// Views with symbolic sizes: a slice with a step and symbolic bounds, a pad by a symbol,
/// a concat of symbolic parts, a flip, one compilation for several bindings.
#[test]
fn symbolic_views() {
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, shape(&[n(), Dim::from(6)]))
        .unwrap();
    let s = g.slice(x, 0, 1, n(), 2).unwrap();
    let p = g
        .pad(
            x,
            vec![
                (Dim::from("p"), Dim::from(1)),
                (Dim::from(0), Dim::from("p")),
            ],
            Scalar::Float(f64::NAN),
        )
        .unwrap();
    let f = g.flip(x, &[0, 1]).unwrap();
    let c = g.concat(&[x, f, x], 0).unwrap();
    let t = g.permute(c, &[1, 0]).unwrap();
    let r = g.reshape(x, shape(&[n() * 2, Dim::from(3)])).unwrap();
    let e = g.exp(t).unwrap();
    for (name, id) in [("s", s), ("p", p), ("c", c), ("t", t), ("r", r), ("e", e)] {
        g.set_output(name, id).unwrap();
    }
    let mut rng = Rng(18);
    let runs: Vec<Feeds> = [(1usize, 0i64), (3, 2), (17, 1), (4097, 3)]
        .iter()
        .map(|&(rows, p)| {
            Feeds::new()
                .input("x", random(DType::F32, &[rows, 6], &mut rng, 3.0, true))
                .bind("p", p)
        })
        .collect();
    check_all("symbolic views", &g, &runs, common::Tol::Exact);
}

const INDEX_DTYPES: [DType; 4] = [DType::I64, DType::I32, DType::U8, DType::U32];
const DATA_DTYPES: [DType; 6] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::F64,
    DType::I16,
    DType::Bool,
];

fn indices(dt: DType, shape: &[usize], bound: usize, rng: &mut Rng) -> kiln_ir::Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<i64> = (0..n).map(|_| rng.below(bound as u64) as i64).collect();
    tensor_i64(dt, shape, &v)
}

#[test]
fn index_select_gather_scatter_and_slice_update() {
    let mut rng = Rng(19);
    for (i, dt) in DATA_DTYPES.into_iter().enumerate() {
        let it = INDEX_DTYPES[i % INDEX_DTYPES.len()];
        let mut g = Graph::new();
        // x: [n, 7]; idx for index_select: [k]; gather idx along axis 1: [n, 3];
        // scatter into dst [n, 7] along 1 with idx/src [n, 4] (duplicates: last write wins,
        // add accumulates); slice_update of rows p..p+2 of x.
        let x = g.input("x", dt, shape(&[n(), Dim::from(7)])).unwrap();
        let sel = g.input("sel", it, shape(&[Dim::from("k")])).unwrap();
        let gi = g.input("gi", it, shape(&[n(), Dim::from(3)])).unwrap();
        let si = g.input("si", it, shape(&[n(), Dim::from(4)])).unwrap();
        let src = g.input("src", dt, shape(&[n(), Dim::from(4)])).unwrap();
        let upd = g
            .input("upd", dt, shape(&[Dim::from(2), Dim::from(7)]))
            .unwrap();
        let rows = g.index_select(x, 0, sel).unwrap();
        let ga = g.gather(x, 1, gi).unwrap();
        let sa = g.scatter(x, 1, si, src, ScatterReduce::Assign).unwrap();
        let sadd = g.scatter(x, 1, si, src, ScatterReduce::Add).ok();
        let su = g.slice_update(x, upd, 0, Dim::from("p")).unwrap();
        g.set_output("rows", rows).unwrap();
        g.set_output("gather", ga).unwrap();
        g.set_output("scatter", sa).unwrap();
        g.set_output("slice_update", su).unwrap();
        if let Some(sadd) = sadd {
            g.set_output("scatter_add", sadd).unwrap();
        }
        let runs: Vec<Feeds> = [(2usize, 1usize, 0i64), (3, 5, 1), (31, 17, 29)]
            .iter()
            .map(|&(r, k, p)| {
                Feeds::new()
                    .input("x", random(dt, &[r, 7], &mut rng, 3.0, true))
                    .input("sel", indices(it, &[k], r, &mut rng))
                    .input("gi", indices(it, &[r, 3], 7, &mut rng))
                    .input("si", indices(it, &[r, 4], 7, &mut rng))
                    .input("src", random(dt, &[r, 4], &mut rng, 3.0, true))
                    .input("upd", random(dt, &[2, 7], &mut rng, 3.0, true))
                    .bind("p", p.min(r as i64 - 2).max(0))
            })
            .collect();
        common::check_mixed(&format!("indexing {dt} by {it}"), &g, &runs, &|n| {
            n == "scatter_add"
        });
    }
}

/// Scatter along the first axis of a 3-D tensor (the serial kernel walks every index), and
/// scatter-add of f16 values (accumulated in f64, rounded once per element).
#[test]
fn scatter_along_outer_axes() {
    let mut rng = Rng(20);
    for dt in [DType::F16, DType::I8, DType::F32] {
        for reduce in [ScatterReduce::Assign, ScatterReduce::Add] {
            let mut g = Graph::new();
            let dst = g
                .input("dst", dt, shape(&[Dim::from(5), n(), Dim::from(3)]))
                .unwrap();
            let idx = g
                .input("idx", DType::I64, shape(&[Dim::from(9), n(), Dim::from(2)]))
                .unwrap();
            let src = g
                .input("src", dt, shape(&[Dim::from(9), n(), Dim::from(2)]))
                .unwrap();
            let y = g.scatter(dst, 0, idx, src, reduce).unwrap();
            g.set_output("y", y).unwrap();
            let runs: Vec<Feeds> = [1usize, 4]
                .iter()
                .map(|&r| {
                    Feeds::new()
                        .input("dst", random(dt, &[5, r, 3], &mut rng, 3.0, false))
                        .input("idx", indices(DType::I64, &[9, r, 2], 5, &mut rng))
                        .input("src", random(dt, &[9, r, 2], &mut rng, 3.0, false))
                })
                .collect();
            check_accum(&format!("scatter {reduce:?} {dt}"), &g, &runs);
        }
    }
}

/// A matmul test: `a` and `b` shapes (before the transposes the flags undo).
#[allow(clippy::too_many_arguments)]
fn matmul_case(
    label: &str,
    dta: DType,
    dtb: DType,
    a: &[usize],
    b: &[usize],
    ta: bool,
    tb: bool,
    rng: &mut Rng,
) {
    let mut g = Graph::new();
    let sa: Vec<Dim> = a.iter().map(|&d| Dim::from(d as i64)).collect();
    let sb: Vec<Dim> = b.iter().map(|&d| Dim::from(d as i64)).collect();
    let x = g.input("a", dta, Shape::new(sa)).unwrap();
    let w = g.param("b", dtb, Shape::new(sb)).unwrap();
    let y = g
        .matmul_t(x, w, ta, tb)
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    g.set_output("y", y).unwrap();
    let f = Feeds::new()
        .input("a", random(dta, a, rng, 2.0, false))
        .param("b", random(dtb, b, rng, 2.0, false));
    check_accum(label, &g, &[f]);
}

#[test]
fn matmul_flags_batches_and_dtypes() {
    let mut rng = Rng(21);
    let sizes = [1usize, 3, 17, 31];
    let mut count = 0;
    for (i, dt) in [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F64,
        DType::I32,
        DType::I64,
        DType::I8,
        DType::U8,
    ]
    .into_iter()
    .enumerate()
    {
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let (m, k, nn) = (sizes[i % 4], sizes[(i + 1) % 4], sizes[(i + 2) % 4]);
            let a = if ta { vec![k, m] } else { vec![m, k] };
            let b = if tb { vec![nn, k] } else { vec![k, nn] };
            matmul_case(
                &format!("matmul {dt} {ta} {tb}"),
                dt,
                dt,
                &a,
                &b,
                ta,
                tb,
                &mut rng,
            );
            // Batched, and a batch axis broadcast on both sides.
            let mut a3 = vec![3];
            a3.extend(&a);
            let mut b3 = vec![3];
            b3.extend(&b);
            matmul_case(
                &format!("bmm {dt} {ta} {tb}"),
                dt,
                dt,
                &a3,
                &b3,
                ta,
                tb,
                &mut rng,
            );
            let mut a4 = vec![2, 1];
            a4.extend(&a);
            let mut b4 = vec![3];
            b4.extend(&b);
            matmul_case(
                &format!("bcast {dt} {ta} {tb}"),
                dt,
                dt,
                &a4,
                &b4,
                ta,
                tb,
                &mut rng,
            );
            count += 3;
        }
    }
    // Mixed float dtypes are exact in f64.
    matmul_case(
        "f16 @ f32",
        DType::F16,
        DType::F32,
        &[5, 17],
        &[17, 3],
        false,
        false,
        &mut rng,
    );
    matmul_case(
        "f32 @ bf16^T",
        DType::F32,
        DType::BF16,
        &[4, 31],
        &[9, 31],
        false,
        true,
        &mut rng,
    );
    println!("matmul: {} cases", count + 2);
}

/// Symbolic matmul sizes: one compilation, several `(m, k)`; large enough that the
/// runtime splits rows across threads.
#[test]
fn symbolic_matmul() {
    let mut g = Graph::new();
    let k = Dim::from("k");
    let x = g.input("x", DType::F32, shape(&[n(), k.clone()])).unwrap();
    let w = g
        .input("w", DType::F32, shape(&[Dim::from(33), k.clone()]))
        .unwrap();
    let y = g.matmul_t(x, w, false, true).unwrap();
    g.set_output("y", y).unwrap();
    let mut rng = Rng(22);
    let runs: Vec<Feeds> = [(1usize, 1usize), (3, 17), (4097, 5), (31, 64)]
        .iter()
        .map(|&(r, kk)| {
            Feeds::new()
                .input("x", random(DType::F32, &[r, kk], &mut rng, 2.0, false))
                .input("w", random(DType::F32, &[33, kk], &mut rng, 2.0, false))
        })
        .collect();
    check_accum("symbolic matmul", &g, &runs);
}

/// A matmul with a block-quantized weight, for every quantized type: `x @ W^T` with `W`
/// stored `[n, k]` (a `Linear` weight), and `W @ x` with `W` as the left operand; the
/// interpreter dequantizes first, so this is "dequantize, then matmul".
#[test]
fn quantized_matmul_every_type() {
    let mut rng = Rng(23);
    for q in QuantType::ALL {
        let k = 2 * q.block_size();
        let dt = DType::Quant(q);
        let mut g = Graph::new();
        let x = g
            .input("x", DType::F32, shape(&[n(), Dim::from(k as i64)]))
            .unwrap();
        let w = g
            .param("w", dt, shape(&[Dim::from(5), Dim::from(k as i64)]))
            .unwrap();
        let xb = g
            .input("xb", DType::BF16, shape(&[Dim::from(k as i64), n()]))
            .unwrap();
        let y = g.matmul_t(x, w, false, true).unwrap();
        let z = g.matmul(w, xb).unwrap();
        g.set_output("y", y).unwrap();
        g.set_output("z", z).unwrap();
        let runs: Vec<Feeds> = [1usize, 3]
            .iter()
            .map(|&r| {
                Feeds::new()
                    .input("x", random(DType::F32, &[r, k], &mut rng, 1.0, false))
                    .input("xb", random(DType::BF16, &[k, r], &mut rng, 1.0, false))
                    .param("w", quant_tensor(q, &[5, k], &mut rng))
            })
            .collect();
        check_accum(&format!("quantized matmul {}", q.name()), &g, &runs);
    }
}

/// An embedding lookup from a block-quantized table, for every quantized type: rows picked
/// by token ids and dequantized (`index_select` then `cast`).
#[test]
fn quantized_embedding_every_type() {
    let mut rng = Rng(24);
    for q in QuantType::ALL {
        let dt = DType::Quant(q);
        let width = q.block_size();
        let mut g = Graph::new();
        let table = g
            .param("table", dt, shape(&[Dim::from(7), Dim::from(width as i64)]))
            .unwrap();
        let ids = g.input("ids", DType::I64, shape(&[n()])).unwrap();
        let rows = g.index_select(table, 0, ids).unwrap();
        let y = g.cast(rows, DType::F32).unwrap();
        g.set_output("y", y).unwrap();
        let t = quant_tensor(q, &[7, width], &mut rng);
        let runs: Vec<Feeds> = [1usize, 5]
            .iter()
            .map(|&r| {
                Feeds::new()
                    .param("table", t.clone())
                    .input("ids", indices(DType::I64, &[r], 7, &mut rng))
            })
            .collect();
        check_all(
            &format!("quantized embedding {}", q.name()),
            &g,
            &runs,
            common::Tol::Exact,
        );
    }
}

fn random_fused_elementwise_case(rows: usize, cols: usize, seed: u64, ops: Vec<usize>) {
    let mut rng = Rng(seed);
    let dt = [DType::F32, DType::F16, DType::BF16, DType::F64][rng.below(4) as usize];
    let mut g = Graph::new();
    let a = g.input("a", dt, Shape::new([rows, cols])).unwrap();
    let b = g.input("b", dt, Shape::new([1, cols])).unwrap();
    let c = g.input("c", dt, Shape::new([rows, 1])).unwrap();
    let mut y = a;
    for &o in &ops {
        y = match o {
            0 => g.add(y, b).unwrap(),
            1 => g.mul(y, c).unwrap(),
            2 => g.sub(b, y).unwrap(),
            3 => g.div(y, c).unwrap(),
            4 => g.exp(y).unwrap(),
            5 => g.tanh(y).unwrap(),
            6 => g.binary(BinaryOp::Max, y, b).unwrap(),
            7 => g.unary(UnaryOp::Erf, y).unwrap(),
            8 => g.binary(BinaryOp::Pow, y, c).unwrap(),
            9 => {
                let m = g.binary(BinaryOp::Gt, y, b).unwrap();
                g.where_(m, y, c).unwrap()
            }
            10 => g.unary(UnaryOp::Rsqrt, y).unwrap(),
            _ => {
                let w = g.cast(y, DType::F32).unwrap();
                let w = g.unary(UnaryOp::Sin, w).unwrap();
                g.cast(w, dt).unwrap()
            }
        };
    }
    g.set_output("y", y).unwrap();
    let f = Feeds::new()
        .input("a", random(dt, &[rows, cols], &mut rng, 3.0, true))
        .input("b", random(dt, &[1, cols], &mut rng, 3.0, false))
        .input("c", random(dt, &[rows, 1], &mut rng, 3.0, false));
    check_all(&format!("{dt} ops {ops:?}"), &g, &[f], common::Tol::Exact);
}

proptest! {
    #![proptest_config(cases(200))]

    /// Random elementwise expressions over broadcast operands of random shapes: a chain of
    /// random float ops, each rounded where the interpreter rounds, fused into one kernel.
    #[test]
    fn random_fused_elementwise(
        rows in 1usize..40,
        cols in 1usize..9,
        seed in any::<u64>(),
        ops in prop::collection::vec(0usize..12, 1..7),
    ) {
        random_fused_elementwise_case(rows, cols, seed, ops);
    }
}

/// Regression: a block-quantized *input* gets a fresh buffer every run, often at the address
/// of the previous run's; the per-thread cache of the last dequantized block (keyed by
/// address) used to return the previous run's values (191 of 200 Q4_K runs were wrong).
/// Every quantized type, 30 runs of new data through one executable, a cast and a matmul.
#[test]
fn quantized_inputs_change_between_runs() {
    let mut rng = Rng(25);
    for q in QuantType::ALL {
        let dt = DType::Quant(q);
        let k = q.block_size() as i64;
        let mut g = Graph::new();
        // One block: the last block a run reads is the first the next run reads.
        let w = g
            .input("w", dt, shape(&[Dim::from(1), Dim::from(k)]))
            .unwrap();
        let x = g
            .input("x", DType::F32, shape(&[Dim::from(1), Dim::from(k)]))
            .unwrap();
        let y = g.cast(w, DType::F32).unwrap();
        let z = g.matmul_t(x, w, false, true).unwrap();
        g.set_output("y", y).unwrap();
        g.set_output("z", z).unwrap();
        let x = random(DType::F32, &[1, k as usize], &mut rng, 1.0, false);
        let runs: Vec<Feeds> = (0..30)
            .map(|_| {
                Feeds::new()
                    .input("w", quant_tensor(q, &[1, k as usize], &mut rng))
                    .input("x", x.clone())
            })
            .collect();
        common::check_mixed(&format!("quantized input {}", q.name()), &g, &runs, &|n| {
            n == "z"
        });
    }
}

const INT_DTYPES: [DType; 6] = [
    DType::I8,
    DType::I16,
    DType::I32,
    DType::I64,
    DType::U8,
    DType::U32,
];

fn random_fused_integer_ops_case(rows: usize, seed: u64, ops: Vec<usize>) {
    let mut rng = Rng(seed);
    let dt = INT_DTYPES[rng.below(6) as usize];
    let mut g = Graph::new();
    let a = g.input("a", dt, Shape::new([rows, 5])).unwrap();
    let b = g.input("b", dt, Shape::new([5])).unwrap();
    let mut y = a;
    for &o in &ops {
        y = match o {
            0 => g.add(y, b).unwrap(),
            1 => g.mul(y, a).unwrap(),
            2 => g.sub(b, y).unwrap(),
            3 => g.div(y, b).unwrap(),
            4 => g.binary(BinaryOp::Mod, a, y).unwrap(),
            5 => g.binary(BinaryOp::Max, y, b).unwrap(),
            6 => g.binary(BinaryOp::Xor, y, a).unwrap(),
            7 => g.unary(UnaryOp::Not, y).unwrap(),
            8 => {
                let m = g.binary(BinaryOp::Lt, y, b).unwrap();
                g.where_(m, a, y).unwrap()
            }
            _ => {
                let w = g.cast(y, DType::I64).unwrap();
                let w = g.mul(w, w).unwrap();
                g.cast(w, dt).unwrap()
            }
        };
    }
    g.set_output("y", y).unwrap();
    let f = Feeds::new()
        .input("a", random(dt, &[rows, 5], &mut rng, 1.0, true))
        .input("b", tensor_f64(dt, &[5], &[0.0, -1.0, 3.0, 1.0, -7.0]));
    check_all(&format!("{dt} ops {ops:?}"), &g, &[f], common::Tol::Exact);
}

fn random_matmuls_case(m: usize, k: usize, n: usize, ta: bool, tb: bool, batch: usize, seed: u64) {
    let mut rng = Rng(seed);
    let dt = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F64,
        DType::I32,
        DType::U8,
    ][rng.below(6) as usize];
    let mut a = if ta { vec![k, m] } else { vec![m, k] };
    let mut b = if tb { vec![n, k] } else { vec![k, n] };
    match batch {
        1 => {
            a.insert(0, 3);
            b.insert(0, 3);
        }
        2 => {
            a.insert(0, 2);
            b.insert(0, 1);
        }
        3 => {
            a.insert(0, 1);
            b.insert(0, 2);
        }
        _ => {}
    }
    matmul_case(
        &format!("{dt} a{a:?} b{b:?} {ta} {tb}"),
        dt,
        dt,
        &a,
        &b,
        ta,
        tb,
        &mut rng,
    );
}

fn random_reductions_case(dims: Vec<usize>, seed: u64, keep: bool) {
    let mut rng = Rng(seed);
    let op = ReduceOp::ALL[rng.below(5) as usize];
    let dt = [DType::F32, DType::BF16, DType::F64, DType::I16, DType::U32][rng.below(5) as usize];
    let mut axes: Vec<usize> = (0..dims.len()).filter(|_| rng.below(2) == 0).collect();
    if axes.is_empty() || op == ReduceOp::ArgMax {
        axes = vec![rng.below(dims.len() as u64) as usize];
    }
    let mut g = Graph::new();
    let x = g.input("x", dt, Shape::new(dims.clone())).unwrap();
    let y = g.reduce(op, x, &axes, keep).unwrap();
    g.set_output("y", y).unwrap();
    let scale = if op == ReduceOp::Prod { 1.3 } else { 4.0 };
    let edges = rng.below(2) == 0;
    let f = Feeds::new().input("x", random(dt, &dims, &mut rng, scale, edges));
    check_accum(
        &format!("{} {dt}{dims:?} axes {axes:?} keep {keep}", op.name()),
        &g,
        &[f],
    );
}

proptest! {
    #![proptest_config(cases(96))]

    /// Random integer expressions (wrapping add/sub/mul, floor div/mod by values that include
    /// 0 and -1, min/max, bitwise ops, comparisons into a select) fused into one kernel.
    #[test]
    fn random_fused_integer_ops(
        rows in 1usize..40,
        seed in any::<u64>(),
        ops in prop::collection::vec(0usize..10, 1..8),
    ) {
        random_fused_integer_ops_case(rows, seed, ops);
    }

    /// Random matmuls: sizes 1..40, both flags, a batch axis broadcast from either side,
    /// a float or integer dtype.
    #[test]
    fn random_matmuls(
        m in 1usize..40,
        k in 1usize..40,
        n in 1usize..40,
        ta in any::<bool>(),
        tb in any::<bool>(),
        batch in 0usize..4,
        seed in any::<u64>(),
    ) {
        random_matmuls_case(m, k, n, ta, tb, batch, seed);
    }

    /// Random reductions: rank 1..4 with sizes 1..9, a random axis set, kept or not.
    #[test]
    fn random_reductions(
        dims in prop::collection::vec(1usize..9, 1..5),
        seed in any::<u64>(),
        keep in any::<bool>(),
    ) {
        random_reductions_case(dims, seed, keep);
    }
}
