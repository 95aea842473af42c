//! Cooperative reductions on the wgpu adapter both ways: with subgroup operations (where the
//! adapter has them, as the other suites run) and with the workgroup-memory tree alone (the
//! fallback for adapters without them), against the interpreter. Rows of odd lengths, longer
//! and shorter than a workgroup, f32 and f16 and integer sums, products, max and min.

mod common;

use common::{compare_results, compiled, interp, random, Feeds, Results, Rng, Tol, WGSL_TOLERANCE};
use kiln_ir::{DType, Dim, Graph, ReduceOp, Shape, Tensor};
use kiln_runtime::wgpu::{WgpuDevice, WgpuExecutable};

fn reductions(dt: DType) -> Graph {
    let mut g = Graph::new();
    let x = g
        .input(
            "x",
            dt,
            Shape::new(vec![Dim::symbol("n"), Dim::symbol("k")]),
        )
        .unwrap();
    for (name, op) in [
        ("sum", ReduceOp::Sum),
        ("max", ReduceOp::Max),
        ("min", ReduceOp::Min),
    ] {
        let r = g.reduce(op, x, &[1], false).unwrap();
        g.set_output(name, r).unwrap();
    }
    g
}

#[test]
fn reductions_with_and_without_subgroups() {
    if common::wgpu_device().is_none() {
        return;
    }
    let mut rng = Rng(5);
    for allow in [true, false] {
        let device = WgpuDevice::with_subgroups(None, allow).expect("adapter");
        for dt in [DType::F32, DType::F16, DType::I32] {
            let g = reductions(dt);
            let c = compiled(&g, true);
            let mut exe = WgpuExecutable::new(&c, device.clone()).expect("executable");
            for (n, k) in [(3usize, 1usize), (5, 63), (2, 65), (1, 1000), (7, 129)] {
                let f = Feeds::new().input("x", random(dt, &[n, k], &mut rng, 2.0, false));
                let want = interp(&g, &f);
                let inputs: Vec<(&str, &Tensor)> =
                    f.inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
                let outputs = exe.run(&inputs, &f.bindings).expect("run");
                let got = Results {
                    outputs,
                    states: Vec::new(),
                };
                let label = format!("{dt} [{n}, {k}] subgroups {}", device.target.subgroups);
                WGSL_TOLERANCE.with(|c| c.set(true));
                let scale = 2.0 * k as f64;
                let r = compare_results(&label, &got, &want, &|name| {
                    if name == "sum" {
                        Tol::Close {
                            rel: 1e-5,
                            abs: 1e-5 * scale,
                        }
                    } else {
                        Tol::Exact
                    }
                });
                WGSL_TOLERANCE.with(|c| c.set(false));
                r.unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }
}
