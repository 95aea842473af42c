//! The linked ahead-of-time kernels against the JIT (bit for bit) and the reference
//! interpreter (within 1e-6 relative; integers exactly), at several values of `n`.

use kiln_aot_link_test::graph::{graph, C, PREFIX};
use kiln_aot_link_test::{
    inputs, params, run_aot, tensor_bytes, BUFFERS, KERNELS, LAUNCHES, LOAD_TIME, OUTPUTS,
};
use kiln_compiler::backend::cpu::normalize::normalized;
use kiln_compiler::egraph::OptimizeOptions;
use kiln_compiler::{compile, Compiled};
use kiln_ir::interp::{run, Env};
use kiln_ir::{Bindings, DType, Tensor};
use kiln_runtime::{CpuExecutable, CpuOptions};

fn compiled() -> Compiled {
    compile(&graph(), Some(&OptimizeOptions::default())).unwrap()
}

fn refs<'a>(v: &'a [(&'static str, Tensor)]) -> Vec<(&'static str, &'a Tensor)> {
    v.iter().map(|(n, t)| (*n, t)).collect()
}

/// The JIT compiles the schedule the object was built from (same kernels, buffers and
/// launches), so the two must agree bit for bit.
#[test]
fn build_time_schedule_is_the_runtime_schedule() {
    let c = compiled();
    let s = &c.schedule;
    assert_eq!(s.kernels.len(), KERNELS.len());
    for (i, (k, d)) in s.kernels.iter().zip(KERNELS).enumerate() {
        assert_eq!(k.to_string(), d.loop_ir, "kernel {i}");
        assert_eq!(d.symbol, format!("{PREFIX}_k{i}"));
        let ids: Vec<usize> = k.params.iter().map(|p| p.id.0 as usize).collect();
        assert_eq!(ids, d.params, "kernel {i}");
    }
    assert_eq!(s.buffers.len(), BUFFERS.len());
    for (b, d) in s.buffers.iter().zip(BUFFERS) {
        assert_eq!(b.dtype.to_string(), d.dtype);
        assert_eq!(b.size.to_string(), d.size);
    }
    let kernels = |l: &[kiln_compiler::schedule::Launch]| -> Vec<usize> {
        l.iter().map(|l| l.kernel).collect()
    };
    assert_eq!(kernels(&s.launches), LAUNCHES);
    assert_eq!(kernels(&s.load_time), LOAD_TIME);
    let outputs: Vec<(String, usize)> = s
        .outputs
        .iter()
        .map(|(n, id)| (n.clone(), id.0 as usize))
        .collect();
    let expected: Vec<(String, usize)> = OUTPUTS.iter().map(|(n, i)| (n.to_string(), *i)).collect();
    assert_eq!(outputs, expected);
}

/// Every kernel has a linked function and runs: each is launched (at load time or per run),
/// kernels with one normalized form share one address, different ones do not.
#[test]
fn every_kernel_symbol_is_linked_and_launched() {
    let c = compiled();
    let norm: Vec<String> = c
        .schedule
        .kernels
        .iter()
        .map(|k| normalized(k).to_string())
        .collect();
    let mut shared = 0;
    for (i, k) in KERNELS.iter().enumerate() {
        assert!(
            LAUNCHES.contains(&i) || LOAD_TIME.contains(&i),
            "{} is never launched",
            k.symbol
        );
        for j in 0..i {
            let same = KERNELS[j].entry as usize == k.entry as usize;
            assert_eq!(
                same,
                norm[i] == norm[j],
                "{} and {}",
                KERNELS[j].symbol,
                k.symbol
            );
            shared += usize::from(same);
        }
    }
    assert!(
        shared >= 1,
        "the two hidden layers should share one function"
    );
    assert!(!LOAD_TIME.is_empty(), "w1 * g1 should run at load time");
    assert!(
        BUFFERS
            .iter()
            .any(|b| matches!(b.role, kiln_aot_link_test::Role::Constant(_))),
        "the input scale should be a constant buffer"
    );
}

fn assert_close(name: &str, n: usize, want: &Tensor, got: &Tensor) {
    assert_eq!(want.shape(), got.shape(), "{name} at n={n}");
    assert_eq!(want.dtype(), got.dtype(), "{name} at n={n}");
    if want.dtype().is_float() {
        let (a, b) = (want.to_f64_vec().unwrap(), got.to_f64_vec().unwrap());
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            assert!(
                (p - q).abs() <= 1e-6 * p.abs().max(1e-30),
                "{name}[{i}] at n={n}: interpreter {p}, compiled {q}"
            );
        }
    } else {
        assert_eq!(
            want.to_i64_vec().unwrap(),
            got.to_i64_vec().unwrap(),
            "{name} at n={n}"
        );
    }
}

#[test]
fn aot_equals_jit_and_matches_the_interpreter() {
    let c = compiled();
    let g = graph();
    let params = params();
    let mut jits: Vec<CpuExecutable> = [1, 2]
        .iter()
        .map(|&threads| {
            let mut exe = CpuExecutable::new(&c, &CpuOptions { threads }).unwrap();
            // The object holds each kernel as one function (f64 accumulation, as the
            // interpreter); compare with the JIT running the same functions.
            exe.use_microkernels(false);
            for (name, t) in &params {
                exe.set_param(name, t).unwrap();
            }
            exe
        })
        .collect();
    for n in [1usize, 2, 7, 33, 130] {
        let inputs = inputs(n);
        let bindings = Bindings::new().with("n", n as i64);
        let mut env = Env::new();
        for (name, t) in &params {
            env.set_param(name, t.clone());
        }
        for (name, t) in &inputs {
            env.set_input(name, t.clone());
        }
        let want = run(&g, &env).unwrap();
        let jit: Vec<Vec<(String, Tensor)>> = jits
            .iter_mut()
            .map(|exe| exe.run(&refs(&inputs), &bindings).unwrap())
            .collect();
        for chunks in [1, 3] {
            let aot = run_aot(&refs(&params), &refs(&inputs), &bindings, chunks).unwrap();
            assert_eq!(aot.len(), want.outputs.len());
            for (name, got) in &aot {
                let expected = want.get(name).unwrap();
                assert_close(name, n, expected, got);
                for j in &jit {
                    let (_, jt) = j.iter().find(|(m, _)| m == name).unwrap();
                    assert_eq!(jt.dtype(), got.dtype(), "{name} at n={n}");
                    assert_eq!(jt.shape(), got.shape(), "{name} at n={n}");
                    assert!(
                        tensor_bytes(jt) == tensor_bytes(got),
                        "{name} at n={n}, {chunks} chunks: AOT and JIT differ"
                    );
                }
            }
            // Not trivially right: the outputs hold real values.
            let probs = &aot.iter().find(|(m, _)| m == "probs").unwrap().1;
            for row in probs.to_f64_vec().unwrap().chunks(C) {
                let sum: f64 = row.iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "probs row {row:?} at n={n}");
            }
            let idx = &aot.iter().find(|(m, _)| m == "idx").unwrap().1;
            assert_eq!(idx.dtype(), DType::I32);
            if n > 1 {
                let v = idx.to_i64_vec().unwrap();
                assert!(v.iter().any(|&x| x != v[0]), "idx at n={n}: {v:?}");
            }
        }
    }
}

/// The program built from `src/main.rs` links the object without the JIT and computes the
/// same bits.
#[test]
fn standalone_binary_links_and_agrees() {
    let n = 5usize;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln-aot-link-test"))
        .arg(n.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let params = params();
    let inputs = inputs(n);
    let bindings = Bindings::new().with("n", n as i64);
    let aot = run_aot(&refs(&params), &refs(&inputs), &bindings, 1).unwrap();
    let expected: String = aot
        .iter()
        .map(|(name, t)| {
            let hex: String = tensor_bytes(t).iter().map(|b| format!("{b:02x}")).collect();
            format!("{name}: {hex}\n")
        })
        .collect();
    assert_eq!(text, expected);
}
