//! Errors, not crashes: out-of-range data-dependent indices, missing and unknown tensors,
//! tensors of the wrong shape or dtype. After an error the executable stays usable.

mod common;

use common::{compiled, executable, interp, run_cpu, tensor_i64, uniform, Feeds, Rng};
use kiln_ir::{DType, Dim, Graph, ScatterReduce, Shape, Tensor};
use kiln_runtime::wgpu::WgpuExecutable;
use kiln_runtime::{CpuError, CpuExecutable, CpuOptions};

fn shape(dims: &[Dim]) -> Shape {
    Shape::new(dims.to_vec())
}

fn n() -> Dim {
    Dim::from("n")
}

/// An embedding lookup `table[ids]` (`[V, 16]`), a gather along the last axis and a
/// scatter along the last axis, each its own output.
fn indexing_graph(op: &str) -> Graph {
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, shape(&[n(), Dim::from(16)]))
        .unwrap();
    let y = match op {
        "index_select" => {
            let ids = g
                .input("ids", DType::I64, shape(&[Dim::from("k")]))
                .unwrap();
            g.index_select(x, 0, ids).unwrap()
        }
        "index_select_cols" => {
            let ids = g
                .input("ids", DType::I64, shape(&[Dim::from("k")]))
                .unwrap();
            g.index_select(x, 1, ids).unwrap()
        }
        "gather" => {
            let ids = g
                .input("ids", DType::I64, shape(&[n(), Dim::from("k")]))
                .unwrap();
            g.gather(x, 1, ids).unwrap()
        }
        _ => {
            let ids = g
                .input("ids", DType::I64, shape(&[n(), Dim::from("k")]))
                .unwrap();
            let src = g
                .input("src", DType::F32, shape(&[n(), Dim::from("k")]))
                .unwrap();
            g.scatter(x, 1, ids, src, ScatterReduce::Add).unwrap()
        }
    };
    let y = g.exp(y).unwrap();
    g.set_output("y", y).unwrap();
    g
}

/// Feeds for [`indexing_graph`]: `rows` rows of x, index values `ids` (per row for gather
/// and scatter).
fn indexing_feeds(op: &str, rows: usize, ids: &[i64], rng: &mut Rng) -> Feeds {
    let f = Feeds::new().input("x", uniform(DType::F32, &[rows, 16], rng, 1.0));
    let k = ids.len();
    if op.starts_with("index_select") {
        f.input("ids", tensor_i64(DType::I64, &[k], ids))
    } else {
        let per_row: Vec<i64> = (0..rows).flat_map(|_| ids.iter().copied()).collect();
        let f = f.input("ids", tensor_i64(DType::I64, &[rows, k], &per_row));
        if op == "scatter" {
            f.input("src", uniform(DType::F32, &[rows, k], rng, 1.0))
        } else {
            f
        }
    }
}

/// Out-of-range indices (an embedding id past the vocabulary, a gather/scatter column past
/// the row in the last row, negative ids, huge ids, `i64::MIN`) are `IndexOutOfRange` with 1
/// and 2 threads (3000 rows: split across threads), optimizer off and on; a valid run
/// afterwards gives the interpreter's result.
///
/// Regression: `i64::MIN` (and any id whose flat offset overflows i64, e.g. `2^60` times a
/// row of 16) used to wrap back into the buffer and read row 0 silently; the JIT now flags
/// overflow in data-dependent index arithmetic.
///
/// Not checked, because the loop IR cannot express it: an index past the end of an inner
/// axis whose flat offset stays inside the buffer (column 16 of row 0 is row 1's column 0).
/// Kernels only know flat buffer lengths, so the loop-IR evaluator and this backend both
/// read the neighbouring row there (reported: the scheduler would have to guard the index).
#[test]
fn out_of_range_indices_are_errors() {
    let mut rng = Rng(40);
    for op in ["index_select", "index_select_cols", "gather", "scatter"] {
        let g = indexing_graph(op);
        let axis_len = |rows: usize| if op == "index_select" { rows } else { 16 } as i64;
        for (optimize, threads) in common::CONFIGS {
            let c = compiled(&g, optimize);
            let mut exe = executable(&c, threads, &Feeds::new()).unwrap();
            for rows in [5usize, 3000] {
                let len = axis_len(rows);
                let bad: [&[i64]; 5] = [
                    &[0, len],
                    &[-1, 2],
                    &[1, 1 << 40],
                    &[i64::MIN, 0],
                    &[len + 1, len - 1],
                ];
                for ids in bad {
                    let f = indexing_feeds(op, rows, ids, &mut rng);
                    match run_cpu(&mut exe, &f) {
                        Err(CpuError::IndexOutOfRange { .. }) => {}
                        Err(e) => panic!("{op} {ids:?} rows {rows}: {e}"),
                        Ok(_) => panic!(
                            "{op} {ids:?} rows {rows} (optimize {optimize}, threads \
                             {threads}): no error"
                        ),
                    }
                }
            }
            // Still usable: in-range indices give the interpreter's result.
            let f = indexing_feeds(op, 5, &[axis_len(5) - 1, 0, 3], &mut rng);
            let got = run_cpu(&mut exe, &f).unwrap();
            let want = interp(&g, &f);
            common::compare_results(op, &got, &want, &|_| common::Tol::Exact).unwrap();
        }
        wgsl_out_of_range(op, &g, &axis_len, &mut rng);
    }
}

/// The same on the wgpu adapter: the WGSL backend checks data-dependent indices against
/// their buffer (`IndexOutOfRange`) and i64 values against its 32 bits (`Int64Range`:
/// `1 << 40` and `i64::MIN`).
fn wgsl_out_of_range(op: &str, g: &Graph, axis_len: &dyn Fn(usize) -> i64, rng: &mut Rng) {
    let Some(device) = common::wgpu_device() else {
        return;
    };
    for optimize in [false, true] {
        let c = compiled(g, optimize);
        let mut exe = WgpuExecutable::new(&c, device.clone()).unwrap();
        for rows in [5usize, 3000] {
            let len = axis_len(rows);
            let bad: [(&[i64], bool); 5] = [
                (&[0, len], true),
                (&[-1, 2], true),
                (&[1, 1 << 40], false),
                (&[i64::MIN, 0], false),
                (&[len + 1, len - 1], true),
            ];
            for (ids, index) in bad {
                let f = indexing_feeds(op, rows, ids, rng);
                match common::run_on(&mut exe, &f) {
                    Err(CpuError::IndexOutOfRange { .. }) if index => {}
                    Err(CpuError::Int64Range { .. }) if !index => {}
                    Err(e) => panic!("wgsl {op} {ids:?} rows {rows}: {e}"),
                    Ok(_) => {
                        panic!("wgsl {op} {ids:?} rows {rows} (optimize {optimize}): no error")
                    }
                }
            }
        }
        let f = indexing_feeds(op, 5, &[axis_len(5) - 1, 0, 3], rng);
        let got = common::run_on(&mut exe, &f).unwrap();
        let want = interp(g, &f);
        common::compare_results_wgsl(op, &got, &want, &|_| common::Tol::Exact).unwrap();
    }
}

fn simple_graph() -> Graph {
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, shape(&[n(), Dim::from(4)]))
        .unwrap();
    let b = g.input("b", DType::F32, shape(&[n()])).unwrap();
    let w = g
        .param("w", DType::F32, shape(&[Dim::from(3), Dim::from(4)]))
        .unwrap();
    let s = g.state("s", DType::F32, shape(&[Dim::from(3)])).unwrap();
    let y = g.matmul_t(x, w, false, true).unwrap();
    let s2 = g.reshape(s, shape(&[Dim::from(1), Dim::from(3)])).unwrap();
    let y = g.add(y, s2).unwrap();
    let b2 = g.reshape(b, shape(&[n(), Dim::from(1)])).unwrap();
    let y = g.mul(y, b2).unwrap();
    g.set_output("y", y).unwrap();
    g.set_state_update("s", s).unwrap();
    g
}

fn t(shape: &[usize]) -> Tensor {
    uniform(DType::F32, shape, &mut Rng(41), 1.0)
}

#[test]
fn missing_unknown_and_mismatched_tensors_are_errors() {
    let g = simple_graph();
    for optimize in [false, true] {
        let c = compiled(&g, optimize);
        let mut exe = CpuExecutable::new(&c, &CpuOptions { threads: 1 }).unwrap();
        let (x, b) = (t(&[2, 4]), t(&[2]));
        // Nothing loaded yet: the param is missing.
        exe.set_state("s", &t(&[3])).unwrap();
        let r = exe.run(&[("x", &x), ("b", &b)], &Default::default());
        assert!(
            matches!(r, Err(CpuError::Missing { kind: "param", ref name }) if name == "w"),
            "{r:?}"
        );
        exe.set_param("w", &t(&[3, 4])).unwrap();
        // A missing input.
        let r = exe.run(&[("x", &x)], &Default::default());
        assert!(
            matches!(r, Err(CpuError::Missing { kind: "input", ref name }) if name == "b"),
            "{r:?}"
        );
        // Unknown names.
        let r = exe.run(&[("x", &x), ("b", &b), ("z", &b)], &Default::default());
        assert!(
            matches!(r, Err(CpuError::Unknown { kind: "input", .. })),
            "{r:?}"
        );
        assert!(matches!(
            exe.set_param("nope", &x),
            Err(CpuError::Unknown { kind: "param", .. })
        ));
        assert!(matches!(
            exe.set_state("nope", &x),
            Err(CpuError::Unknown { kind: "state", .. })
        ));
        // Wrong shapes and dtypes: a fixed dim, the rank, the dtype, two inputs disagreeing
        // on `n`, a symbol bound explicitly to another value.
        let mismatches: Vec<(Tensor, Tensor, kiln_ir::Bindings)> = vec![
            (t(&[2, 5]), t(&[2]), Default::default()),
            (t(&[8]), t(&[2]), Default::default()),
            (
                tensor_i64(DType::I32, &[2, 4], &[0; 8]),
                t(&[2]),
                Default::default(),
            ),
            (t(&[2, 4]), t(&[3]), Default::default()),
            (t(&[2, 4]), t(&[2]), kiln_ir::Bindings::new().with("n", 3)),
        ];
        for (x, b, bind) in &mismatches {
            let r = exe.run(&[("x", x), ("b", b)], bind);
            assert!(
                matches!(r, Err(CpuError::Mismatch { kind: "input", .. })),
                "x {:?} b {:?} {bind:?}: {r:?}",
                x.shape(),
                b.shape()
            );
        }
        assert!(matches!(
            exe.set_param("w", &t(&[4, 3])),
            Err(CpuError::Mismatch { kind: "param", .. })
        ));
        assert!(matches!(
            exe.set_state("s", &t(&[3, 1])),
            Err(CpuError::Mismatch { kind: "state", .. })
        ));
        // A missing state.
        let c2 = compiled(&g, optimize);
        let mut fresh = CpuExecutable::new(&c2, &CpuOptions { threads: 1 }).unwrap();
        fresh.set_param("w", &t(&[3, 4])).unwrap();
        let r = fresh.run(&[("x", &x), ("b", &b)], &Default::default());
        assert!(
            matches!(r, Err(CpuError::Missing { kind: "state", ref name }) if name == "s"),
            "{r:?}"
        );
        // After all these errors, a good run matches the interpreter.
        let f = Feeds::new()
            .input("x", x.clone())
            .input("b", b.clone())
            .param("w", t(&[3, 4]))
            .state("s", t(&[3]));
        let got = run_cpu(&mut exe, &f).unwrap();
        // A matmul (f32 accumulation on the micro-kernels).
        common::compare_results("good run", &got, &interp(&g, &f), &|_| common::Tol::Close {
            rel: 1e-6,
            abs: 1e-6,
        })
        .unwrap();
    }
}

/// Regression: an input, param or state the graph declares but no output reads (so the
/// schedule has no buffer for it) is accepted and ignored, as the interpreter does; it used
/// to be refused as "the graph has no input named ...".
#[test]
fn declared_but_unused_sources_are_ignored() {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, shape(&[n()])).unwrap();
    g.input("mask", DType::Bool, shape(&[n()])).unwrap();
    g.param("unused.weight", DType::F32, shape(&[Dim::from(2)]))
        .unwrap();
    g.state("cache", DType::F32, shape(&[Dim::from(2)]))
        .unwrap();
    let y = g.exp(x).unwrap();
    g.set_output("y", y).unwrap();
    let f = Feeds::new()
        .input("x", t(&[5]))
        .input("mask", tensor_i64(DType::Bool, &[5], &[1, 0, 1, 0, 1]))
        .param("unused.weight", t(&[2]))
        .state("cache", t(&[2]));
    common::check("unused sources", &g, &f, common::Tol::Exact);
    // Still refused: names the graph does not declare at all, and values of the wrong
    // dtype or shape (the interpreter checks every tensor it is given).
    let c = compiled(&g, false);
    let mut exe = CpuExecutable::new(&c, &CpuOptions { threads: 1 }).unwrap();
    assert!(matches!(
        exe.set_param("other", &t(&[2])),
        Err(CpuError::Unknown { .. })
    ));
    assert!(matches!(
        exe.set_param("unused.weight", &t(&[3])),
        Err(CpuError::Mismatch { .. })
    ));
    assert!(matches!(
        exe.set_state("cache", &tensor_i64(DType::I32, &[2], &[1, 2])),
        Err(CpuError::Mismatch { .. })
    ));
    let (x, mask) = (t(&[5]), t(&[5]));
    let r = exe.run(&[("x", &x), ("mask", &mask)], &Default::default());
    assert!(matches!(r, Err(CpuError::Mismatch { .. })), "{r:?}");
}

/// Regression: an index into an empty tensor is `IndexOutOfRange`, not a crash. The JIT
/// clamps an out-of-range index into the buffer, which for an empty buffer is element 0;
/// an empty intermediate in an empty arena had no storage there (the kernel read a dangling
/// address: SIGSEGV), and an empty quantized table too little for the whole block a
/// dequantizing load reads.
#[test]
fn indices_into_empty_tensors_are_errors() {
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, shape(&[n(), Dim::from(16)]))
        .unwrap();
    let ids = g.input("ids", DType::I64, shape(&[Dim::from(3)])).unwrap();
    let q = kiln_ir::QuantType::Q8_K;
    let table = g
        .input("table", DType::Quant(q), shape(&[n(), Dim::from(256)]))
        .unwrap();
    // exp(x) feeds two kernels, so it is an arena intermediate; with n = 0 it is empty.
    let y = g.exp(x).unwrap();
    let s = g.sum(y, &[0, 1], false).unwrap();
    let rows = g.index_select(y, 0, ids).unwrap();
    let qrows = g.index_select(table, 0, ids).unwrap();
    let qrows = g.cast(qrows, DType::F32).unwrap();
    let gathered = {
        let gi = g
            .reshape(ids, shape(&[Dim::from(3), Dim::from(1)]))
            .unwrap();
        let xt = g.slice(x, 1, 0, 1, 1).unwrap();
        let xt = g.permute(xt, &[1, 0]).unwrap();
        let xt = g.expand(xt, shape(&[Dim::from(3), n()])).unwrap();
        g.gather(xt, 1, gi).unwrap()
    };
    for (name, id) in [
        ("s", s),
        ("rows", rows),
        ("qrows", qrows),
        ("gathered", gathered),
    ] {
        g.set_output(name, id).unwrap();
    }
    let mut rng = Rng(42);
    for (optimize, threads) in common::CONFIGS {
        let c = compiled(&g, optimize);
        let mut exe = executable(&c, threads, &Feeds::new()).unwrap();
        let empty = Feeds::new()
            .input("x", uniform(DType::F32, &[0, 16], &mut rng, 1.0))
            .input("table", common::quant_tensor(q, &[0, 256], &mut rng))
            .input("ids", tensor_i64(DType::I64, &[3], &[0, 0, 0]));
        let r = run_cpu(&mut exe, &empty);
        assert!(
            matches!(r, Err(CpuError::IndexOutOfRange { .. })),
            "optimize {optimize}: {r:?}"
        );
        let full = Feeds::new()
            .input("x", uniform(DType::F32, &[4, 16], &mut rng, 1.0))
            .input("table", common::quant_tensor(q, &[4, 256], &mut rng))
            .input("ids", tensor_i64(DType::I64, &[3], &[3, 0, 2]));
        let got = run_cpu(&mut exe, &full).unwrap();
        common::compare_results("after", &got, &interp(&g, &full), &|n| {
            if n == "s" {
                common::Tol::Close {
                    rel: 1e-5,
                    abs: 1e-5,
                }
            } else {
                common::Tol::Exact
            }
        })
        .unwrap();
    }
}

/// Regression: symbol values that put a view out of bounds are `CpuError::Bounds`, where
/// the interpreter says `EvalError::Bounds` / `NegativeDim`: a slice ending past its
/// operand (used to read past the buffer: SIGSEGV), a pad by a negative amount, and a KV
/// cache decoded past its capacity (`past + seq > max_seq`: the attention read past the
/// cache). In-bounds values still run, and the executable stays usable.
#[test]
fn out_of_bounds_symbol_values_are_errors() {
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, shape(&[n(), Dim::from(4)]))
        .unwrap();
    let s = g.slice(x, 0, Dim::from("a"), Dim::from("m"), 1).unwrap();
    let s = g.exp(s).unwrap();
    g.set_output("s", s).unwrap();
    let p = g
        .pad(
            x,
            vec![(Dim::from("p"), Dim::from(0)), (Dim::from(0), Dim::from(0))],
            kiln_ir::Scalar::Float(0.0),
        )
        .unwrap();
    g.set_output("p", p).unwrap();
    let mut rng = Rng(43);
    let x3 = uniform(DType::F32, &[3, 4], &mut rng, 1.0);
    for optimize in [false, true] {
        let c = compiled(&g, optimize);
        let mut exe = executable(&c, 1, &Feeds::new()).unwrap();
        for (a, m, p) in [
            (0, 100_000, 0),
            (0, 4, 0),
            (2, 1, 0),
            (-1, 2, 0),
            (0, 3, -1),
        ] {
            let f = Feeds::new()
                .input("x", x3.clone())
                .bind("a", a)
                .bind("m", m)
                .bind("p", p);
            assert!(kiln_ir::interp::run(&g, &f.env()).is_err());
            let r = run_cpu(&mut exe, &f);
            assert!(
                matches!(r, Err(CpuError::Bounds { .. })),
                "a {a} m {m} p {p}: {r:?}"
            );
        }
        let f = Feeds::new()
            .input("x", x3.clone())
            .bind("a", 1)
            .bind("m", 3)
            .bind("p", 2);
        let got = run_cpu(&mut exe, &f).unwrap();
        common::compare_results("in bounds", &got, &interp(&g, &f), &|_| common::Tol::Exact)
            .unwrap();
    }

    // Gather indices with more rows than the operand (`m > n`).
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, shape(&[n(), Dim::from(4)]))
        .unwrap();
    let idx = g
        .input("idx", DType::I64, shape(&[Dim::from("m"), Dim::from(2)]))
        .unwrap();
    let y = g.gather(x, 1, idx).unwrap();
    g.set_output("y", y).unwrap();
    let mut exe = executable(&compiled(&g, false), 1, &Feeds::new()).unwrap();
    for m in [2usize, 4] {
        let f = Feeds::new()
            .input("x", x3.clone())
            .input("idx", tensor_i64(DType::I64, &[m, 2], &vec![1; 2 * m]));
        let r = run_cpu(&mut exe, &f);
        if m <= 3 {
            r.unwrap();
        } else {
            assert!(kiln_ir::interp::run(&g, &f.env()).is_err());
            assert!(matches!(r, Err(CpuError::Bounds { .. })), "{r:?}");
        }
    }

    // A KV cache of 8 positions: 6 + 2 fit, 7 + 2 do not.
    use kiln_nn::layers::{Attention, AttentionConfig};
    let attn = Attention::new(&AttentionConfig::new(16, 2, 1, 8).with_cache(1, 8));
    let tr = kiln_nn::Trace::new();
    let xt = tr.input("x", DType::F32, kiln_nn::dims![1, "seq", 16]);
    tr.output("y", &attn.forward_cached(&xt, attn.cache.as_ref().unwrap()));
    let g = tr.finish().unwrap();
    let c = compiled(&g, true);
    let mut f = Feeds::new();
    f.params = common::module_weights(&attn, &mut rng, 0.3, &|_| None);
    let mut exe = executable(&c, 2, &f).unwrap();
    for (name, t) in common::zero_states(&attn, 1) {
        exe.set_state(&name, &t).unwrap();
    }
    let step = |past: i64, rng: &mut Rng| {
        Feeds::new()
            .input("x", uniform(DType::F32, &[1, 2, 16], rng, 1.0))
            .bind("past", past)
    };
    run_cpu(&mut exe, &step(6, &mut rng)).unwrap();
    let r = run_cpu(&mut exe, &step(7, &mut rng));
    assert!(matches!(r, Err(CpuError::Bounds { .. })), "{r:?}");
}

/// Regression: max, min and argmax over an axis of extent 0 are errors, as in the
/// interpreter (`EmptyReduction`); they used to return -inf/+inf and index -1. A sum over
/// it is 0, and a reduction whose result is empty too is fine.
#[test]
fn empty_max_min_argmax_are_errors() {
    for op in [
        kiln_ir::ReduceOp::Max,
        kiln_ir::ReduceOp::Min,
        kiln_ir::ReduceOp::ArgMax,
    ] {
        let mut g = Graph::new();
        let x = g
            .input("x", DType::F32, shape(&[Dim::from("r"), n()]))
            .unwrap();
        let y = g.reduce(op, x, &[1], false).unwrap();
        let s = g.sum(x, &[1], false).unwrap();
        g.set_output("y", y).unwrap();
        g.set_output("s", s).unwrap();
        for optimize in [false, true] {
            let mut exe = executable(&compiled(&g, optimize), 1, &Feeds::new()).unwrap();
            for (r, c) in [(3usize, 0usize), (0, 0), (2, 5)] {
                let f = Feeds::new().input("x", uniform(DType::F32, &[r, c], &mut Rng(44), 1.0));
                let want = kiln_ir::interp::run(&g, &f.env());
                match run_cpu(&mut exe, &f) {
                    Err(CpuError::Bounds { .. }) => assert!(want.is_err(), "{r}x{c}"),
                    Ok(got) => common::compare_results(
                        &format!("{} {r}x{c}", op.name()),
                        &got,
                        &interp(&g, &f),
                        &|_| common::Tol::Exact,
                    )
                    .unwrap(),
                    Err(e) => panic!("{r}x{c}: {e}"),
                }
                assert_eq!(want.is_err(), (r, c) == (3, 0));
            }
        }
    }
}

/// Regression: a dim that refers to a symbol bound by a later input (`[2*n]` before `[n]`),
/// or a state whose size disagrees with the inputs, is a `Mismatch` as in the interpreter;
/// a tensor too large used to be accepted (its prefix used) and one too small was reported
/// as `BufferTooSmall`, a runtime bug.
#[test]
fn dims_checked_once_every_symbol_is_bound() {
    let mut g = Graph::new();
    let a = g.input("a", DType::F32, shape(&[n() * 2])).unwrap();
    let b = g.input("b", DType::F32, shape(&[n()])).unwrap();
    let s = g.state("s", DType::F32, shape(&[n()])).unwrap();
    let a2 = g.reshape(a, shape(&[n(), Dim::from(2)])).unwrap();
    let r = g.sum(a2, &[1], false).unwrap();
    let y = g.add(r, b).unwrap();
    let y = g.add(y, s).unwrap();
    g.set_output("y", y).unwrap();
    g.set_state_update("s", y).unwrap();
    let mut rng = Rng(45);
    for optimize in [false, true] {
        let mut exe = executable(&compiled(&g, optimize), 1, &Feeds::new()).unwrap();
        for (na, nb, ns) in [
            (7usize, 3usize, 3usize),
            (5, 3, 3),
            (2, 3, 3),
            (6, 3, 4),
            (6, 3, 2),
        ] {
            let f = Feeds::new()
                .input("a", uniform(DType::F32, &[na], &mut rng, 1.0))
                .input("b", uniform(DType::F32, &[nb], &mut rng, 1.0))
                .state("s", uniform(DType::F32, &[ns], &mut rng, 1.0));
            assert!(kiln_ir::interp::run(&g, &f.env()).is_err());
            let r = run_cpu(&mut exe, &f);
            assert!(
                matches!(r, Err(CpuError::Mismatch { .. })),
                "a {na} b {nb} s {ns}: {r:?}"
            );
        }
        let f = Feeds::new()
            .input("a", uniform(DType::F32, &[6], &mut rng, 1.0))
            .input("b", uniform(DType::F32, &[3], &mut rng, 1.0))
            .state("s", uniform(DType::F32, &[3], &mut rng, 1.0));
        let got = run_cpu(&mut exe, &f).unwrap();
        common::compare_results("good", &got, &interp(&g, &f), &|_| common::Tol::Exact).unwrap();
    }
}
