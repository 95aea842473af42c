//! Cooperative reductions on the wgpu adapter both ways: with subgroup operations (where the
//! adapter has them, as the other suites run) and with the workgroup-memory tree alone (the
//! fallback for adapters without them), against the interpreter. Rows of odd lengths, longer
//! and shorter than a workgroup, f32 and f16 and integer sums, products, max and min.

mod common;

use common::{compare_results_wgsl, compiled, interp, random, run_on, Feeds, Rng, Tol};
use kiln_ir::{DType, Dim, Graph, ReduceOp, Shape};
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
                let got = run_on(&mut exe, &f).expect("run");
                let label = format!("{dt} [{n}, {k}] subgroups {}", device.target.subgroups);
                let scale = 2.0 * k as f64;
                let r = compare_results_wgsl(&label, &got, &want, &|name| {
                    if name == "sum" {
                        Tol::Close {
                            rel: 1e-5,
                            abs: 1e-5 * scale,
                        }
                    } else {
                        Tol::Exact
                    }
                });
                r.unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }
}

/// Executables built for one adapter selector share one device (a model's prompt and step
/// programs exchange their KV-cache buffers and share weight buffers).
#[test]
fn one_device_per_selector() {
    if common::wgpu_device().is_none() {
        return;
    }
    let g = reductions(DType::F32);
    let c = compiled(&g, false);
    let device = kiln_runtime::Device::Wgpu(Some("0".into()));
    let cpu = kiln_runtime::CpuOptions::default();
    let a = kiln_runtime::Executable::new(&c, &device, &cpu).expect("executable");
    let b = kiln_runtime::Executable::new(&c, &device, &cpu).expect("executable");
    let (kiln_runtime::Executable::Wgpu(a), kiln_runtime::Executable::Wgpu(b)) = (a, b) else {
        panic!("not wgpu executables");
    };
    assert!(std::sync::Arc::ptr_eq(a.device(), b.device()));
}
