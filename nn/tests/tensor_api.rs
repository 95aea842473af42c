//! Kiln's `Tensor` API against PyTorch: every public method, operator and activation is
//! traced with the arguments of a fixture case, run on the reference interpreter and compared
//! with PyTorch's result (`scripts/fixtures/make_tensor_api_fixtures.py` makes the fixture and
//! documents the cases and tolerances).
//!
//! Ints and bools must match exactly and the result dtype must be PyTorch's; floats within
//! the case's `atol + rtol * |want|` (rtol 1e-6 for f32, 1e-12 for f64 unless the case says
//! why not). Two checks keep the coverage honest: every name in [`API`] has a case, and every
//! `pub fn` in `nn/src/tensor/` is in [`API`] or [`INTROSPECTION`] (tested below), so a new
//! method without a test fails here.

mod common;

use common::Fixture;
use kiln_ir::interp::{run, Env};
use kiln_ir::{DType, Scalar, Shape};
use kiln_nn::functional::{self, GeluApprox};
use kiln_nn::{dims, Tensor, Trace};
use serde_json::Value;
use std::collections::BTreeSet;

/// The public API with fixture cases: `Tensor` methods and associated functions,
/// `op_*` for the operators (`&a + &b`, `a % 2`, `-a`), `rop_*` for a scalar on the left
/// (`2.0 - &x`), and the activations of `kiln_nn::functional`.
#[rustfmt::skip]
const API: &[&str] = &[
    // elementwise.rs
    "neg", "abs", "exp", "log", "sqrt", "rsqrt", "reciprocal", "sin", "cos", "tanh", "erf",
    "floor", "ceil", "round", "sign", "logical_not", "bitwise_not", "square", "add", "sub", "mul",
    "div", "pow", "maximum", "minimum", "remainder", "eq", "ne", "lt", "le", "gt", "ge",
    "logical_and", "logical_or", "logical_xor", "bitwise_and", "bitwise_or", "bitwise_xor", "to",
    "type_as", "where_", "masked_fill", "clamp", "clamp_min", "clamp_max",
    // ops.rs
    "op_add", "op_sub", "op_mul", "op_div", "op_rem", "op_neg", "rop_add", "rop_sub", "rop_mul",
    "rop_div",
    // reduce.rs
    "sum", "sum_all", "prod", "max", "min", "argmax", "argmin", "mean", "var", "std", "softmax",
    "log_softmax",
    // shape_ops.rs
    "reshape", "view", "flatten", "unsqueeze", "squeeze", "permute", "transpose", "t",
    "contiguous", "expand", "expand_as", "repeat", "cat", "stack", "slice", "narrow", "split",
    "split_sizes", "chunk", "pad", "flip", "full_like",
    // index.rs
    "index_select", "gather", "scatter", "scatter_add", "slice_update",
    // linalg.rs
    "matmul", "matmul_t",
    // create.rs
    "full", "zeros", "ones", "constant", "arange", "dim_value", "tril_mask",
    // functional.rs
    "relu", "sigmoid", "silu", "gelu",
];

/// Public methods that only describe a tensor (no graph node); `introspection` tests them.
const INTROSPECTION: &[&str] = &["node", "ty", "shape", "dtype", "rank", "size"];

/// A scalar argument as the Rust type the case asks for.
#[derive(Clone, Copy, Debug)]
enum Sc {
    F64(f64),
    F32(f32),
    I64(i64),
    I32(i32),
    Bool(bool),
}

fn scalar(v: &Value) -> Sc {
    let text = v["v"].as_str().expect("scalar text");
    let s: Scalar = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
    match (v["t"].as_str().expect("scalar type"), s) {
        ("f64", s) => Sc::F64(s.to_f64()),
        ("f32", s) => Sc::F32(s.to_f64() as f32),
        ("i64", Scalar::Int(i)) => Sc::I64(i),
        ("i32", Scalar::Int(i)) => Sc::I32(i as i32),
        ("bool", Scalar::Bool(b)) => Sc::Bool(b),
        (t, s) => panic!("scalar {s} as {t}"),
    }
}

/// Evaluates `$e` with `$v` bound to the scalar as its Rust type.
macro_rules! with_scalar {
    ($s:expr, $v:ident => $e:expr) => {
        match $s {
            Sc::F64($v) => $e,
            Sc::F32($v) => $e,
            Sc::I64($v) => $e,
            Sc::I32($v) => $e,
            Sc::Bool($v) => $e,
        }
    };
}

/// As `with_scalar!`, for the numeric types only (a bool has no arithmetic operators).
macro_rules! with_number {
    ($s:expr, $v:ident => $e:expr) => {
        match $s {
            Sc::F64($v) => $e,
            Sc::F32($v) => $e,
            Sc::I64($v) => $e,
            Sc::I32($v) => $e,
            Sc::Bool(_) => panic!("a bool on the left of an operator"),
        }
    };
}

fn int(a: &Value, key: &str) -> i64 {
    a[key]
        .as_i64()
        .unwrap_or_else(|| panic!("argument `{key}` in {a}"))
}

fn isz(a: &Value, key: &str) -> isize {
    int(a, key) as isize
}

fn ints(a: &Value, key: &str) -> Vec<i64> {
    a[key]
        .as_array()
        .unwrap_or_else(|| panic!("argument `{key}` in {a}"))
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect()
}

fn isizes(a: &Value, key: &str) -> Vec<isize> {
    ints(a, key).into_iter().map(|v| v as isize).collect()
}

fn shape(a: &Value, key: &str) -> Shape {
    Shape::new(ints(a, key))
}

fn dtype(a: &Value, key: &str) -> DType {
    let name = a[key].as_str().expect("dtype name");
    DType::from_name(name).unwrap_or_else(|| panic!("dtype {name}"))
}

fn flag(a: &Value, key: &str) -> bool {
    a[key]
        .as_bool()
        .unwrap_or_else(|| panic!("argument `{key}` in {a}"))
}

/// `$x.$m(rhs)` with the case's scalar, or with the second tensor.
macro_rules! binary {
    ($a:expr, $x:expr, $m:ident) => {
        match $a.get("scalar") {
            Some(s) => with_scalar!(scalar(s), v => $x[0].$m(v)),
            None => $x[0].$m(&$x[1]),
        }
    };
}

/// An operator, borrowed and owned: `[&a + &b, a + b]` (or with the case's scalar).
macro_rules! operator {
    ($a:expr, $x:expr, $op:tt) => {
        match $a.get("scalar") {
            Some(s) => with_scalar!(scalar(s), v => vec![&$x[0] $op v, $x[0].clone() $op v]),
            None => vec![&$x[0] $op &$x[1], $x[0].clone() $op $x[1].clone()],
        }
    };
}

/// A scalar on the left of an operator, with a borrowed and an owned tensor:
/// `[2.0 - &x, 2.0 - x]`.
macro_rules! scalar_left {
    ($a:expr, $x:expr, $op:tt) => {
        with_number!(scalar(&$a["scalar"]), v => vec![v $op &$x[0], v $op $x[0].clone()])
    };
}

/// A reduction's axes: one (`0`) or a list (`[0, -2]`), passed as given.
macro_rules! reduce {
    ($a:expr, $x:expr, $m:ident) => {{
        let keepdim = flag($a, "keepdim");
        match &$a["dims"] {
            Value::Array(_) => $x[0].$m(isizes($a, "dims"), keepdim),
            d => $x[0].$m(d.as_i64().unwrap() as isize, keepdim),
        }
    }};
}

/// Calls the Kiln method of a case; several results for split and chunk, and the borrowed
/// and owned forms of an operator (each compared with the same expected result).
fn call(method: &str, a: &Value, x: &[Tensor]) -> Vec<Tensor> {
    let t = match method {
        "neg" => x[0].neg(),
        "abs" => x[0].abs(),
        "exp" => x[0].exp(),
        "log" => x[0].log(),
        "sqrt" => x[0].sqrt(),
        "rsqrt" => x[0].rsqrt(),
        "reciprocal" => x[0].reciprocal(),
        "sin" => x[0].sin(),
        "cos" => x[0].cos(),
        "tanh" => x[0].tanh(),
        "erf" => x[0].erf(),
        "floor" => x[0].floor(),
        "ceil" => x[0].ceil(),
        "round" => x[0].round(),
        "sign" => x[0].sign(),
        "logical_not" => x[0].logical_not(),
        "bitwise_not" => x[0].bitwise_not(),
        "square" => x[0].square(),
        "add" => binary!(a, x, add),
        "sub" => binary!(a, x, sub),
        "mul" => binary!(a, x, mul),
        "div" => binary!(a, x, div),
        "pow" => binary!(a, x, pow),
        "maximum" => binary!(a, x, maximum),
        "minimum" => binary!(a, x, minimum),
        "remainder" => binary!(a, x, remainder),
        "eq" => binary!(a, x, eq),
        "ne" => binary!(a, x, ne),
        "lt" => binary!(a, x, lt),
        "le" => binary!(a, x, le),
        "gt" => binary!(a, x, gt),
        "ge" => binary!(a, x, ge),
        "logical_and" => binary!(a, x, logical_and),
        "logical_or" => binary!(a, x, logical_or),
        "logical_xor" => binary!(a, x, logical_xor),
        "bitwise_and" => binary!(a, x, bitwise_and),
        "bitwise_or" => binary!(a, x, bitwise_or),
        "bitwise_xor" => binary!(a, x, bitwise_xor),
        "to" => x[0].to(dtype(a, "dtype")),
        "type_as" => x[0].type_as(&x[1]),
        "where_" => match (a.get("a").map(scalar), a.get("b").map(scalar)) {
            (None, None) => Tensor::where_(&x[0], &x[1], &x[2]),
            (Some(s), None) => with_scalar!(s, v => Tensor::where_(&x[0], v, &x[1])),
            (None, Some(s)) => with_scalar!(s, v => Tensor::where_(&x[0], &x[1], v)),
            (Some(s), Some(r)) => {
                with_scalar!(s, v => with_scalar!(r, w => Tensor::where_(&x[0], v, w)))
            }
        },
        "masked_fill" => with_scalar!(scalar(&a["value"]), v => x[0].masked_fill(&x[1], v)),
        "clamp" => {
            let (lo, hi) = (scalar(&a["min"]), scalar(&a["max"]));
            with_scalar!(lo, l => with_scalar!(hi, h => x[0].clamp(l, h)))
        }
        "clamp_min" => with_scalar!(scalar(&a["min"]), v => x[0].clamp_min(v)),
        "clamp_max" => with_scalar!(scalar(&a["max"]), v => x[0].clamp_max(v)),
        "op_add" => return operator!(a, x, +),
        "op_sub" => return operator!(a, x, -),
        "op_mul" => return operator!(a, x, *),
        "op_div" => return operator!(a, x, /),
        "op_rem" => return operator!(a, x, %),
        "op_neg" => return vec![-&x[0], -x[0].clone()],
        "rop_add" => return scalar_left!(a, x, +),
        "rop_sub" => return scalar_left!(a, x, -),
        "rop_mul" => return scalar_left!(a, x, *),
        "rop_div" => return scalar_left!(a, x, /),
        "sum" => reduce!(a, x, sum),
        "sum_all" => x[0].sum_all(),
        "prod" => reduce!(a, x, prod),
        "max" => reduce!(a, x, max),
        "min" => reduce!(a, x, min),
        "mean" => reduce!(a, x, mean),
        "argmax" => x[0].argmax(isz(a, "dim"), flag(a, "keepdim")),
        "argmin" => x[0].argmin(isz(a, "dim"), flag(a, "keepdim")),
        "var" => x[0].var(isizes(a, "dims"), flag(a, "keepdim"), int(a, "correction")),
        "std" => x[0].std(isizes(a, "dims"), flag(a, "keepdim"), int(a, "correction")),
        "softmax" => x[0].softmax(isz(a, "dim")),
        "log_softmax" => x[0].log_softmax(isz(a, "dim")),
        "reshape" => x[0].reshape(shape(a, "shape")),
        "view" => x[0].view(shape(a, "shape")),
        "flatten" => x[0].flatten(isz(a, "start"), isz(a, "end")),
        "unsqueeze" => x[0].unsqueeze(isz(a, "dim")),
        "squeeze" => x[0].squeeze(isz(a, "dim")),
        "permute" => x[0].permute(&isizes(a, "dims")),
        "transpose" => x[0].transpose(isz(a, "dim0"), isz(a, "dim1")),
        "t" => x[0].t(),
        "contiguous" => x[0].contiguous(),
        "expand" => x[0].expand(shape(a, "shape")),
        "expand_as" => x[0].expand_as(&x[1]),
        "repeat" => {
            let r: Vec<usize> = ints(a, "repeats").iter().map(|&v| v as usize).collect();
            x[0].repeat(&r)
        }
        "cat" => Tensor::cat(x, isz(a, "dim")),
        "stack" => Tensor::stack(x, isz(a, "dim")),
        "slice" => x[0].slice(
            isz(a, "dim"),
            int(a, "start"),
            int(a, "end"),
            int(a, "step"),
        ),
        "narrow" => x[0].narrow(isz(a, "dim"), int(a, "start"), int(a, "length")),
        "split" => return x[0].split(int(a, "size") as usize, isz(a, "dim")),
        "split_sizes" => {
            let sizes: Vec<kiln_ir::Dim> = ints(a, "sizes").into_iter().map(Into::into).collect();
            return x[0].split_sizes(&sizes, isz(a, "dim"));
        }
        "chunk" => return x[0].chunk(int(a, "chunks") as usize, isz(a, "dim")),
        "pad" => {
            let pads: Vec<(kiln_ir::Dim, kiln_ir::Dim)> = a["pads"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_i64().unwrap().into(), p[1].as_i64().unwrap().into()))
                .collect();
            let Sc::F64(v) = scalar(&a["value"]) else {
                panic!("pad takes an f64")
            };
            x[0].pad(&pads, v)
        }
        "flip" => x[0].flip(&isizes(a, "dims")),
        "full_like" => with_scalar!(scalar(&a["value"]), v => x[0].full_like(v)),
        "index_select" => x[0].index_select(isz(a, "dim"), &x[1]),
        "gather" => x[0].gather(isz(a, "dim"), &x[1]),
        "scatter" => x[0].scatter(isz(a, "dim"), &x[1], &x[2]),
        "scatter_add" => x[0].scatter_add(isz(a, "dim"), &x[1], &x[2]),
        "slice_update" => x[0].slice_update(isz(a, "dim"), int(a, "start"), &x[1]),
        "matmul" => x[0].matmul(&x[1]),
        "matmul_t" => x[0].matmul_t(&x[1]),
        "full" => {
            let text = a["value"]["v"].as_str().unwrap();
            Tensor::full(shape(a, "shape"), text.parse().unwrap(), dtype(a, "dtype"))
        }
        "zeros" => Tensor::zeros(shape(a, "shape"), dtype(a, "dtype")),
        "ones" => Tensor::ones(shape(a, "shape"), dtype(a, "dtype")),
        "arange" => Tensor::arange(int(a, "n"), dtype(a, "dtype")),
        "dim_value" => Tensor::dim_value(int(a, "dim"), dtype(a, "dtype")),
        "tril_mask" => Tensor::tril_mask(int(a, "rows"), int(a, "cols"), int(a, "diagonal")),
        "relu" => functional::relu(&x[0]),
        "sigmoid" => functional::sigmoid(&x[0]),
        "silu" => functional::silu(&x[0]),
        "gelu" => {
            let approx = match a["approximate"].as_str() {
                Some("none") => GeluApprox::None,
                Some("tanh") => GeluApprox::Tanh,
                other => panic!("gelu approximate {other:?}"),
            };
            functional::gelu(&x[0], approx)
        }
        other => panic!("no Kiln call for fixture method `{other}`"),
    };
    vec![t]
}

/// Compares one result: dtype, shape, then values (exact for ints and bools).
fn compare(
    got: &kiln_ir::Tensor,
    want: &kiln_ir::Tensor,
    rtol: f64,
    atol: f64,
) -> Result<(), String> {
    if got.dtype() != want.dtype() {
        return Err(format!("dtype {} (PyTorch: {})", got.dtype(), want.dtype()));
    }
    if got.shape() != want.shape() {
        return Err(format!(
            "shape {:?} (PyTorch: {:?})",
            got.shape(),
            want.shape()
        ));
    }
    if !want.dtype().is_float() {
        let (g, w) = (got.to_i64_vec().unwrap(), want.to_i64_vec().unwrap());
        return match g.iter().zip(&w).position(|(a, b)| a != b) {
            Some(i) => Err(format!("element {i}: got {}, want {}", g[i], w[i])),
            None => Ok(()),
        };
    }
    let (g, w) = (got.to_f64_vec().unwrap(), want.to_f64_vec().unwrap());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let ok = a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= atol + rtol * b.abs();
        if !ok {
            return Err(format!(
                "element {i}: got {a:e}, want {b:e} (|diff| {:e}, rtol {rtol:e}, atol {atol:e})",
                (a - b).abs()
            ));
        }
    }
    Ok(())
}

/// Traces, runs and checks one case; the error names what differed.
fn check(fx: &Fixture, c: &Value) -> Result<(), String> {
    let method = c["method"].as_str().unwrap();
    let names: Vec<&str> = c["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let trace = Trace::new();
    let mut env = Env::new();
    let results = if method == "constant" {
        // The argument is the value itself, baked into the graph, not a graph input.
        vec![Tensor::constant(fx.get(names[0]).clone())]
    } else {
        let mut inputs = Vec::new();
        for (k, name) in names.iter().enumerate() {
            let value = fx.get(name);
            let graph_name = format!("in{k}");
            let shape = Shape::new(value.shape().iter().map(|&d| d as i64));
            inputs.push(trace.input(&graph_name, value.dtype(), shape));
            env.set_input(&graph_name, value.clone());
        }
        call(method, &c["args"], &inputs)
    };
    for (k, r) in results.iter().enumerate() {
        trace.output(&format!("out{k}"), r);
    }
    let graph = trace.finish().map_err(|e| format!("trace: {e}"))?;
    let out = run(&graph, &env).map_err(|e| format!("interpreter: {e}"))?;
    let wants: Vec<&str> = c["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // Operators give each form (borrowed, owned) of the one expected result.
    if wants.is_empty() || results.is_empty() || !results.len().is_multiple_of(wants.len()) {
        return Err(format!(
            "{} results, PyTorch gives {}",
            results.len(),
            wants.len()
        ));
    }
    let (rtol, atol) = (c["rtol"].as_f64().unwrap(), c["atol"].as_f64().unwrap());
    for k in 0..results.len() {
        let got = out.get(&format!("out{k}")).unwrap();
        let want = fx.get(wants[k % wants.len()]);
        compare(got, want, rtol, atol).map_err(|e| format!("result {k}: {e}"))?;
    }
    Ok(())
}

/// The number of cases the fixture script wrote (metadata key `count`).
fn fixture_count() -> usize {
    let path = format!(
        "{}/tests/fixtures/tensor_api.safetensors",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    header.metadata().as_ref().unwrap()["count"]
        .parse()
        .unwrap()
}

#[test]
fn tensor_api_matches_pytorch() {
    let fx = common::load("tensor_api.safetensors");
    let cases = fx.meta.as_array().expect("a list of cases");
    let mut seen = 0;
    let mut methods = BTreeSet::new();
    let mut failures = Vec::new();
    for c in cases {
        let (name, method) = (c["name"].as_str().unwrap(), c["method"].as_str().unwrap());
        let args = &c["args"];
        if let Err(e) = check(&fx, c) {
            failures.push(format!("{name} {method}({args}): {e}"));
        }
        seen += 1;
        methods.insert(method.to_string());
    }
    assert!(
        failures.is_empty(),
        "{} of {seen} cases differ from PyTorch:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        seen,
        fixture_count(),
        "cases checked vs the fixture's count"
    );
    let missing: Vec<&&str> = API.iter().filter(|m| !methods.contains(**m)).collect();
    assert!(
        missing.is_empty(),
        "API methods without a fixture case: {missing:?}"
    );
    let unknown: Vec<&String> = methods
        .iter()
        .filter(|m| !API.contains(&m.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "fixture methods not in API: {unknown:?}"
    );
}

/// Every `pub fn` of `nn/src/tensor/*.rs` (and every method its `unary!`/`binary!` macros
/// make) is listed in `API` or `INTROSPECTION`.
#[test]
fn every_public_tensor_method_is_listed() {
    let dir = format!("{}/src/tensor", env!("CARGO_MANIFEST_DIR"));
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let src = std::fs::read_to_string(&path).unwrap();
        let mut in_macro_call = false;
        for line in src.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("pub fn ") {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if name != "$f" && !name.is_empty() {
                    found.insert(name);
                }
            }
            // `unary!(` / `binary!(` invocations list `name => Op,` lines.
            if line == "unary!(" || line == "binary!(" {
                in_macro_call = true;
            } else if line.starts_with(");") {
                in_macro_call = false;
            } else if in_macro_call {
                if let Some((name, _)) = line.split_once(" => ") {
                    found.insert(name.to_string());
                }
            }
        }
    }
    let unlisted: Vec<&String> = found
        .iter()
        .filter(|m| !API.contains(&m.as_str()) && !INTROSPECTION.contains(&m.as_str()))
        .collect();
    assert!(
        unlisted.is_empty(),
        "public Tensor methods with no fixture case: {unlisted:?}"
    );
    assert!(found.contains("neg") && found.contains("logical_xor") && found.contains("matmul"));
}

#[test]
fn introspection() {
    let trace = Trace::new();
    let x = trace.input("x", DType::F32, dims!["seq", 3, 7]);
    assert_eq!(x.dtype(), DType::F32);
    assert_eq!(x.rank(), 3);
    assert_eq!(x.shape(), dims!["seq", 3, 7]);
    assert_eq!(x.ty().to_string(), "f32[seq, 3, 7]");
    assert_eq!(x.size(0), kiln_ir::Dim::symbol("seq"));
    assert_eq!(x.size(-1), 7);
    let y = x.exp();
    assert_ne!(x.node(), y.node());
    trace.output("y", &y);
    let g = trace.finish().unwrap();
    assert_eq!(g.output("y"), Some(y.node()));
}

/// Kiln's `masked_fill` broadcasts `self` against the mask (PyTorch refuses a mask larger
/// than `self`, so there is no fixture case); attention layers rely on it to merge an
/// additive `[L, S]` mask with a `[B, 1, 1, S]` padding mask.
#[test]
fn masked_fill_broadcasts_beyond_self() {
    let trace = Trace::new();
    let x = trace.input("x", DType::F32, dims![3]);
    let m = trace.input("m", DType::Bool, dims![2, 1]);
    let y = x.masked_fill(&m, -1.0);
    assert_eq!(y.ty().to_string(), "f32[2, 3]");
    trace.output("y", &y);
    let g = trace.finish().unwrap();
    let env = Env::new()
        .input(
            "x",
            kiln_ir::Tensor::from_vec(vec![3], vec![1.0f32, 2.0, 3.0]).unwrap(),
        )
        .input(
            "m",
            kiln_ir::Tensor::from_vec(vec![2, 1], vec![false, true]).unwrap(),
        );
    let out = run(&g, &env).unwrap();
    let got = out.get("y").unwrap().as_slice::<f32>().unwrap().to_vec();
    assert_eq!(got, [1.0, 2.0, 3.0, -1.0, -1.0, -1.0]);
}
