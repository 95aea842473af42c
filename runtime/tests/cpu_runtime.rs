//! The runtime side of the CPU device against the interpreter: empty tensors, runs that
//! shrink and grow the arena (stale data must not leak), thread counts other than 1 and 2,
//! parallel nests of several loops split mid-row, large reductions split across threads, an
//! f16 KV cache, outputs that alias each other, a state, a param or a constant, and weights
//! reloaded between runs (load-time kernels rerun).

mod common;

use common::{
    check_accum, check_all, check_decode, check_runs, compare_results, compiled, interp, random,
    run_cpu, uniform, Feeds, Rng, Tol,
};
use kiln_ir::{DType, Dim, Graph, Scalar, Shape, Tensor};
use kiln_nn::layers::{Attention, AttentionConfig, GatedMlp, GatedMlpConfig, KvCacheConfig};
use kiln_nn::{dims, Trace};
use kiln_runtime::{CpuExecutable, CpuOptions};

fn shape(dims: &[Dim]) -> Shape {
    Shape::new(dims.to_vec())
}

fn n() -> Dim {
    Dim::from("n")
}

/// Zero rows, a zero-length contraction (the product is 0), and an empty sum.
#[test]
fn empty_tensors() {
    let mut g = Graph::new();
    let k = Dim::from("k");
    let x = g.input("x", DType::F32, shape(&[n(), k.clone()])).unwrap();
    let w = g.input("w", DType::F32, shape(&[Dim::from(5), k])).unwrap();
    let y = g.matmul_t(x, w, false, true).unwrap();
    let e = g.exp(x).unwrap();
    let s = g.sum(x, &[0], false).unwrap();
    g.set_output("y", y).unwrap();
    g.set_output("e", e).unwrap();
    g.set_output("s", s).unwrap();
    let mut rng = Rng(70);
    let runs: Vec<Feeds> = [(0usize, 3usize), (3, 0), (0, 0), (2, 3)]
        .iter()
        .map(|&(r, k)| {
            Feeds::new()
                .input("x", uniform(DType::F32, &[r, k], &mut rng, 1.0))
                .input("w", uniform(DType::F32, &[5, k], &mut rng, 1.0))
        })
        .collect();
    check_accum("empty", &g, &runs);
}

/// Big runs, then small, then big again through one executable: intermediates in the arena
/// and scratch buffers (a float scatter-add accumulates in an f64 scratch buffer) must not
/// carry values from an earlier run.
#[test]
fn shrinking_and_growing_runs() {
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, shape(&[n(), Dim::from(9)]))
        .unwrap();
    let idx = g
        .input("idx", DType::I64, shape(&[n(), Dim::from(4)]))
        .unwrap();
    let src = g
        .input("src", DType::F32, shape(&[n(), Dim::from(4)]))
        .unwrap();
    // Two kernels with an arena intermediate between them (a sum read by two consumers).
    let m = g.sum(x, &[1], true).unwrap();
    let a = g.sub(x, m).unwrap();
    let b = g.mul(x, m).unwrap();
    let sc = g
        .scatter(x, 1, idx, src, kiln_ir::ScatterReduce::Add)
        .unwrap();
    g.set_output("a", a).unwrap();
    g.set_output("b", b).unwrap();
    g.set_output("sc", sc).unwrap();
    let mut rng = Rng(71);
    let runs: Vec<Feeds> = [4097usize, 1, 31, 3, 2000, 0, 17]
        .iter()
        .map(|&r| {
            let ids: Vec<i64> = (0..r * 4).map(|_| rng.below(9) as i64).collect();
            Feeds::new()
                .input("x", random(DType::F32, &[r, 9], &mut rng, 3.0, false))
                .input("idx", common::tensor_i64(DType::I64, &[r, 4], &ids))
                .input("src", uniform(DType::F32, &[r, 4], &mut rng, 3.0))
        })
        .collect();
    check_accum("shrink/grow", &g, &runs);
}

/// 3 threads on a 2-core machine, and 0 (one per core), on a 4-D permute whose parallel
/// nest spans three loops (the flat range is split in the middle of rows) and a row
/// reduction.
#[test]
fn other_thread_counts_and_deep_parallel_nests() {
    let mut g = Graph::new();
    let x = g
        .input(
            "x",
            DType::F32,
            shape(&[n(), Dim::from(3), Dim::from(5), Dim::from(7)]),
        )
        .unwrap();
    let p = g.permute(x, &[2, 0, 3, 1]).unwrap();
    let e = g.exp(p).unwrap();
    let s = g.sum(x, &[3], false).unwrap();
    g.set_output("e", e).unwrap();
    g.set_output("s", s).unwrap();
    let mut rng = Rng(72);
    let feeds: Vec<Feeds> = [701usize, 1, 2]
        .iter()
        .map(|&r| Feeds::new().input("x", uniform(DType::F32, &[r, 3, 5, 7], &mut rng, 2.0)))
        .collect();
    let scales: Vec<_> = feeds.iter().map(|f| common::accum_scales(&g, f)).collect();
    for optimize in [false, true] {
        let c = compiled(&g, optimize);
        for threads in [3, 0] {
            let mut exe = CpuExecutable::new(&c, &CpuOptions { threads }).unwrap();
            assert!(exe.threads() >= 1);
            for (i, f) in feeds.iter().enumerate() {
                let got = run_cpu(&mut exe, f).unwrap();
                let want = interp(&g, f);
                let tol = |name: &str| {
                    let s = scales[i].iter().find(|(n, _)| n == name).unwrap();
                    Tol::Accum(s.1.clone())
                };
                compare_results(&format!("threads {threads} run {i}"), &got, &want, &tol)
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }
}

/// Every reduction of 4097 rows (split across threads), keepdim and not, inner and outer
/// axes.
#[test]
fn large_reductions_across_threads() {
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, shape(&[n(), Dim::from(17), Dim::from(5)]))
        .unwrap();
    for op in kiln_ir::ReduceOp::ALL {
        for axes in [&[1usize][..], &[2], &[1, 2], &[0]] {
            if op == kiln_ir::ReduceOp::ArgMax && axes.len() > 1 {
                continue;
            }
            let y = g.reduce(op, x, axes, axes.len() == 1).unwrap();
            g.set_output(&format!("{}{axes:?}", op.name()), y).unwrap();
        }
    }
    let mut rng = Rng(73);
    let runs =
        vec![Feeds::new().input("x", random(DType::F32, &[4097, 17, 5], &mut rng, 1.2, true))];
    check_accum("large reductions", &g, &runs);
}

/// An f16 KV cache: keys and values rounded to f16 when written, read back as f16.
#[test]
fn f16_kv_cache() {
    let mut cfg = AttentionConfig::new(16, 2, 1, 8);
    cfg.cache = Some(KvCacheConfig::new(1, 1, 8, 8).with_dtype(DType::F16));
    let attn = Attention::new(&cfg);
    let tr = Trace::new();
    let x = tr.input("x", DType::F32, dims![1, "seq", 16]);
    tr.output("y", &attn.forward_cached(&x, attn.cache.as_ref().unwrap()));
    let g = tr.finish().unwrap();
    let weights = common::module_weights(&attn, &mut Rng(74), 0.3, &|_| None);
    let states = common::zero_states(&attn, 1);
    assert!(states.iter().all(|(_, t)| t.dtype() == DType::F16));
    common::assert_updates_in_place(&g);
    let steps = common::cache_steps(&[3usize, 1, 1, 3], 16, &mut Rng(75));
    check_decode("f16 cache", &g, &weights, &states, &steps, &|_| {
        Tol::Close {
            rel: 1e-5,
            abs: 1e-5,
        }
    });
}

/// Outputs that are the same node twice, an input, a param, a constant, a fill, and a state
/// update that is the state itself or another output.
#[test]
fn aliased_outputs() {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, shape(&[n()])).unwrap();
    let w = g.param("w", DType::I16, shape(&[Dim::from(3)])).unwrap();
    let s = g.state("s", DType::F32, shape(&[n()])).unwrap();
    let t = g.state("t", DType::BF16, shape(&[Dim::from(2)])).unwrap();
    let c = g
        .constant(Tensor::from_vec(vec![2, 2], vec![1u8, 2, 3, 4]).unwrap())
        .unwrap();
    let f = g
        .full(Scalar::Float(2.5), DType::F16, shape(&[n()]))
        .unwrap();
    let y = g.add(x, s).unwrap();
    for (name, id) in [
        ("y", y),
        ("y_again", y),
        ("x", x),
        ("w", w),
        ("c", c),
        ("f", f),
        ("s", s),
    ] {
        g.set_output(name, id).unwrap();
    }
    g.set_state_update("s", y).unwrap();
    g.set_state_update("t", t).unwrap();
    let mut rng = Rng(76);
    let params = vec![(
        "w".to_string(),
        common::tensor_i64(DType::I16, &[3], &[-7, 300, i64::from(i16::MIN)]),
    )];
    let states = vec![
        ("s".to_string(), uniform(DType::F32, &[5], &mut rng, 1.0)),
        ("t".to_string(), uniform(DType::BF16, &[2], &mut rng, 1.0)),
    ];
    let steps: Vec<Feeds> = (0..3)
        .map(|_| Feeds::new().input("x", uniform(DType::F32, &[5], &mut rng, 1.0)))
        .collect();
    check_decode("aliased outputs", &g, &params, &states, &steps, &|_| {
        Tol::Exact
    });
}

/// A cache-like state `[8, 4]` written at row `past` by `x * 2`: updated in place when the
/// old value is dead after the write (also with the old value and the new one as outputs),
/// copied into a new value when a later kernel reads the old one; several steps each, the
/// runtime carrying the state, against the interpreter.
#[test]
fn state_updates_in_place_or_copied() {
    let build = |extra: &dyn Fn(&mut Graph, kiln_ir::NodeId, kiln_ir::NodeId)| {
        let mut g = Graph::new();
        let x = g
            .input("x", DType::F32, shape(&[n(), Dim::from(4)]))
            .unwrap();
        let cache = g
            .state("cache", DType::F32, shape(&[8.into(), 4.into()]))
            .unwrap();
        let two = g.scalar(Scalar::Float(2.0), DType::F32).unwrap();
        let x2 = g.mul(x, two).unwrap();
        let upd = g.slice_update(cache, x2, 0, "past").unwrap();
        g.set_state_update("cache", upd).unwrap();
        let seen = g.slice(upd, 0, 0, Dim::from("past") + n(), 1).unwrap();
        let y = g.exp(seen).unwrap();
        g.set_output("y", y).unwrap();
        extra(&mut g, cache, upd);
        g
    };
    let in_place = build(&|_, _, _| {});
    let both = build(&|g, cache, upd| {
        g.set_output("old", cache).unwrap();
        g.set_output("new", upd).unwrap();
    });
    let late = build(&|g, cache, _| {
        let old = g.neg(cache).unwrap();
        g.set_output("old", old).unwrap();
    });
    for (label, g, expect) in [
        ("in place", &in_place, true),
        ("old and new as outputs", &both, true),
        ("old value read late", &late, false),
    ] {
        for optimize in [false, true] {
            let c = compiled(g, optimize);
            assert_eq!(c.schedule.updated_in_place("cache"), expect, "{label}");
        }
        let mut rng = Rng(78);
        let states = vec![(
            "cache".to_string(),
            uniform(DType::F32, &[8, 4], &mut rng, 1.0),
        )];
        let mut past = 0;
        let steps: Vec<Feeds> = [3usize, 1, 2, 1]
            .iter()
            .map(|&s| {
                let f = Feeds::new()
                    .input("x", uniform(DType::F32, &[s, 4], &mut rng, 1.0))
                    .bind("past", past);
                past += s as i64;
                f
            })
            .collect();
        check_decode(label, g, &[], &states, &steps, &|_| Tol::Exact);
    }
}

/// New weights through `set_param` between runs: the load-time kernels (the optimizer's
/// gate/up weight concat) run again, and the results follow the new weights.
#[test]
fn reloaded_weights_rerun_load_time_kernels() {
    let mlp = GatedMlp::new(&GatedMlpConfig::swiglu(16, 24));
    let tr = Trace::new();
    let x = tr.input("x", DType::F32, dims!["n", 16]);
    tr.output("y", &mlp.forward(&x));
    let g = tr.finish().unwrap();
    assert_eq!(compiled(&g, true).schedule.load_time.len(), 1);
    let mut rng = Rng(77);
    let runs: Vec<Feeds> = (0..3)
        .map(|i| {
            let mut f = Feeds::new().input("x", uniform(DType::F32, &[3 + i, 16], &mut rng, 1.0));
            f.params = common::module_weights(&mlp, &mut rng, 0.5, &|_| None);
            f
        })
        .collect();
    check_runs("reloaded weights", &g, &runs, &|_, _| Tol::Close {
        rel: 1e-5,
        abs: 1e-5,
    });
    // The same with a block-quantized weight reloaded in place.
    let mut g = Graph::new();
    let q = kiln_ir::QuantType::Q4_K;
    let w = g
        .param("w", DType::Quant(q), shape(&[Dim::from(1), Dim::from(256)]))
        .unwrap();
    let y = g.cast(w, DType::F32).unwrap();
    g.set_output("y", y).unwrap();
    let runs: Vec<Feeds> = (0..4)
        .map(|_| Feeds::new().param("w", common::quant_tensor(q, &[1, 256], &mut rng)))
        .collect();
    check_all("reloaded q4_k", &g, &runs, Tol::Exact);
}
