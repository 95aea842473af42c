//! Hand-written loop-IR kernels that use constructs the scheduler does not emit today (`if`
//! statements, accumulators assigned under a condition, several top-level statements, lazy
//! selects guarding loads past a buffer's end, a parallel nest of three loops), JIT-compiled
//! by the CPU backend and called through its ABI, against the loop-IR evaluator.

use kiln_compiler::backend::cpu::compile_kernel;
use kiln_compiler::loop_ir::eval::{eval_kernel, Buffer};
use kiln_compiler::loop_ir::{
    BufferId, BufferParam, BufferRole, Expr, Kernel, KernelConfig, KernelKind, Loop, LoopAnnot,
    LoopKind, Stmt,
};
use kiln_ir::{BinaryOp, Bindings, DType, Dim, Scalar, Tensor, UnaryOp};
use kiln_runtime::cpu::{tensor_bytes, tensor_from_bytes, AlignedBytes};
use proptest::prelude::*;

/// Proptest settings: `n` cases, no failure files.
fn cases(n: u32) -> ProptestConfig {
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}
use std::collections::HashMap;

fn param(id: u32, dtype: DType, len: Dim, role: BufferRole) -> BufferParam {
    BufferParam {
        id: BufferId(id),
        dtype,
        len,
        role,
    }
}

fn lp(var: &str, extent: Dim, kind: LoopKind, body: Vec<Stmt>) -> Stmt {
    Stmt::Loop(Loop {
        var: var.into(),
        extent,
        annot: LoopAnnot::new(kind),
        body,
    })
}

fn load(b: u32, dtype: DType, index: Dim) -> Expr {
    Expr::Load {
        buffer: BufferId(b),
        dtype,
        index,
    }
}

fn c_i64(v: i64) -> Expr {
    Expr::constant(Scalar::Int(v), DType::I64)
}

fn kernel(kind: KernelKind, params: Vec<BufferParam>, body: Vec<Stmt>) -> Kernel {
    let mut k = Kernel {
        name: "hand".into(),
        kind,
        params,
        symbols: Vec::new(),
        config: KernelConfig {
            workgroup: [1, 1, 1],
        },
        body,
    };
    k.symbols = k.free_symbols();
    k
}

/// Runs `k` on the JIT (in `chunks` ranges of its parallel nest) and on the evaluator;
/// every buffer must end bit-identical.
fn check(k: &Kernel, tensors: &[Tensor], b: &Bindings, chunks: i64) {
    let jit = compile_kernel(k).unwrap_or_else(|e| panic!("{e}\n{k}"));
    let mut bytes: Vec<AlignedBytes> = tensors
        .iter()
        .map(|t| AlignedBytes::from_slice(&tensor_bytes(t)))
        .collect();
    let ptrs: Vec<*mut u8> = bytes.iter_mut().map(|x| x.as_mut_ptr()).collect();
    let syms: Vec<i64> = k
        .symbols
        .iter()
        .map(|s| b.get(s).expect("symbol"))
        .collect();
    let total = jit.parallel.as_ref().map_or(1, |d| d.eval(b).unwrap());
    let chunks = if jit.parallel.is_some() { chunks } else { 1 };
    let mut status = 0i64;
    for c in 0..chunks {
        let (lo, hi) = (total * c / chunks, total * (c + 1) / chunks);
        // SAFETY: the buffers hold what the kernel's parameters declare, in order; the
        // symbols are in the kernel's order.
        unsafe { (jit.entry)(ptrs.as_ptr(), syms.as_ptr(), lo, hi, &mut status) };
    }
    assert_eq!(status, 0);
    let mut bufs: HashMap<BufferId, Buffer> = k
        .params
        .iter()
        .zip(tensors)
        .map(|(p, t)| (p.id, Buffer::from_tensor(t)))
        .collect();
    eval_kernel(k, &mut bufs, b).unwrap_or_else(|e| panic!("{e}\n{k}"));
    for ((p, t), got) in k.params.iter().zip(tensors).zip(&bytes) {
        let got = tensor_from_bytes(t.dtype(), t.shape().to_vec(), got.as_slice()).unwrap();
        let want = bufs[&p.id].to_tensor(t.shape().to_vec()).unwrap();
        assert_eq!(
            tensor_bytes(&got),
            tensor_bytes(&want),
            "buffer {}:\njit  {got:?}\neval {want:?}\n{k}",
            p.id
        );
    }
}

fn i32s(v: &[i64]) -> Tensor {
    Tensor::from_vec(
        vec![v.len()],
        v.iter().map(|&x| x as i32).collect::<Vec<_>>(),
    )
    .unwrap()
}

fn if_statements_and_conditional_accumulators_case(v: Vec<i64>) {
    let n = v.len() as i64;
    let x = || Expr::var("x", DType::I64);
    let gt = |a: Expr, b: Expr| Expr::binary(BinaryOp::Gt, DType::I64, a, b);
    let add = |a: Expr, b: Expr| Expr::binary(BinaryOp::Add, DType::I64, a, b);
    let body = vec![
        Stmt::Declare {
            var: "sum".into(),
            dtype: DType::I64,
            init: c_i64(0),
        },
        Stmt::Declare {
            var: "count".into(),
            dtype: DType::I64,
            init: c_i64(0),
        },
        Stmt::Declare {
            var: "best".into(),
            dtype: DType::I64,
            init: c_i64(i64::MIN),
        },
        lp(
            "i",
            Dim::from("n"),
            LoopKind::Serial,
            vec![
                Stmt::Let {
                    var: "x".into(),
                    dtype: DType::I64,
                    value: Expr::cast(DType::I64, load(0, DType::I32, Dim::from("i"))),
                },
                Stmt::If {
                    cond: gt(x(), c_i64(0)),
                    then: vec![
                        Stmt::Assign {
                            var: "sum".into(),
                            value: add(Expr::var("sum", DType::I64), x()),
                        },
                        Stmt::Assign {
                            var: "count".into(),
                            value: add(Expr::var("count", DType::I64), c_i64(1)),
                        },
                    ],
                },
                Stmt::If {
                    cond: gt(x(), Expr::var("best", DType::I64)),
                    then: vec![
                        Stmt::Assign {
                            var: "best".into(),
                            value: x(),
                        },
                        Stmt::Store {
                            buffer: BufferId(1),
                            index: Dim::from("i"),
                            value: Expr::cast(DType::F32, x()),
                        },
                    ],
                },
            ],
        ),
        Stmt::Store {
            buffer: BufferId(2),
            index: Dim::from(0),
            value: Expr::var("sum", DType::I64),
        },
        Stmt::Store {
            buffer: BufferId(2),
            index: Dim::from(1),
            value: Expr::var("count", DType::I64),
        },
        Stmt::If {
            cond: Expr::unary(
                UnaryOp::Not,
                DType::Bool,
                gt(Expr::var("count", DType::I64), c_i64(0)),
            ),
            then: vec![Stmt::Store {
                buffer: BufferId(2),
                index: Dim::from(2),
                value: c_i64(-1),
            }],
        },
    ];
    let k = kernel(
        KernelKind::Scatter,
        vec![
            param(0, DType::I32, Dim::from("n"), BufferRole::Input),
            param(1, DType::F32, Dim::from("n"), BufferRole::Output),
            param(2, DType::I64, Dim::from(3), BufferRole::Output),
        ],
        body,
    );
    let tensors = [
        i32s(&v),
        Tensor::from_vec(vec![v.len()], vec![f32::NAN; v.len()]).unwrap(),
        Tensor::from_vec(vec![3], vec![7i64, 7, 7]).unwrap(),
    ];
    check(&k, &tensors, &Bindings::new().with("n", n), 1);
}

fn deep_parallel_nest_and_guarded_loads_case(
    a: i64,
    b: i64,
    c: i64,
    m: i64,
    chunks: i64,
    seed: u64,
) {
    let idx = Dim::from("i") * Dim::from("b") * Dim::from("c")
        + Dim::from("j") * Dim::from("c")
        + Dim::from("k");
    let guarded = Expr::select(
        Expr::binary(
            BinaryOp::Lt,
            DType::I64,
            Expr::Index(Dim::from("k")),
            Expr::Index(Dim::from("m")),
        ),
        load(0, DType::F64, Dim::from("k")),
        Expr::constant(Scalar::Float(-0.0), DType::F64),
    );
    let value = Expr::binary(
        BinaryOp::Mul,
        DType::F64,
        guarded,
        Expr::cast(DType::F64, Expr::Index(idx.clone())),
    );
    let body = vec![lp(
        "i",
        Dim::from("a"),
        LoopKind::Parallel,
        vec![lp(
            "j",
            Dim::from("b"),
            LoopKind::Parallel,
            vec![lp(
                "k",
                Dim::from("c"),
                LoopKind::Parallel,
                vec![Stmt::Store {
                    buffer: BufferId(1),
                    index: idx.clone(),
                    value,
                }],
            )],
        )],
    )];
    let len = Dim::from("a") * Dim::from("b") * Dim::from("c");
    let k = kernel(
        KernelKind::Elementwise,
        vec![
            param(0, DType::F64, Dim::from("m"), BufferRole::Input),
            param(1, DType::F64, len, BufferRole::Output),
        ],
        body,
    );
    let mut s = seed;
    let xs: Vec<f64> = (0..m)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
            (s >> 40) as f64 / 7.0
        })
        .collect();
    let tensors = [
        Tensor::from_vec(vec![m as usize], xs).unwrap(),
        Tensor::from_vec(
            vec![(a * b * c) as usize],
            vec![f64::NAN; (a * b * c) as usize],
        )
        .unwrap(),
    ];
    let bind = Bindings::new()
        .with("a", a)
        .with("b", b)
        .with("c", c)
        .with("m", m);
    check(&k, &tensors, &bind, chunks);
}

proptest! {
    #![proptest_config(cases(64))]

    /// A serial loop with `if`s: sum and count the positive values (accumulators assigned
    /// under a condition), store a running maximum only where it grows, then store the
    /// results after the loop (several top-level statements, no parallel nest).
    #[test]
    fn if_statements_and_conditional_accumulators(
        v in prop::collection::vec(-1000i64..1000, 1..60),
    ) {
        if_statements_and_conditional_accumulators_case(v);
    }

    /// A parallel nest of three loops over `[a, b, c]` (split into 1 to 4 ranges that cut
    /// rows apart) whose innermost loop reads `x[k]` only where `k < m` through a lazy
    /// select: `x` has `m` elements, so an eager load would read past its end.
    #[test]
    fn deep_parallel_nest_and_guarded_loads(
        a in 1i64..5,
        b in 1i64..5,
        c in 1i64..7,
        m in 0i64..8,
        chunks in 1i64..5,
        seed in any::<u64>(),
    ) {
        deep_parallel_nest_and_guarded_loads_case(a, b, c, m, chunks, seed);
    }
}
