//! The reference interpreter against NumPy, op by op.
//!
//! `fixtures/ops.safetensors` is made by `scripts/fixtures/make_op_fixtures.py` (see its header
//! for the format and the tolerances). Each case is one op applied to stored operands; this
//! test builds the case's graph with the builder, runs the interpreter and compares with the
//! stored result: integers, bools and quantized blocks exactly, floats exactly or within the
//! case's `ulps` (f64: 1e-12 relative) plus its `atol`. NaN must match NaN; the sign of zero
//! is not compared.
//!
//! The test fails if the file's case count disagrees with the cases found, if any stored
//! tensor goes unused, or if some op of the IR appears in no case.

mod op_fixtures;

use std::collections::{BTreeMap, BTreeSet};

use kiln_ir::interp::run;
use kiln_ir::{BinaryOp, DType, Op, ReduceOp, Tensor, UnaryOp};
use op_fixtures::{build, cases, FIXTURES};
use safetensors::SafeTensors;

/// The op family of a node, by an exhaustive match: adding an op to the IR breaks this
/// function until the op is listed in [`FAMILIES`] (and then given fixture cases).
fn family(op: &Op) -> String {
    match op {
        Op::Input { .. } => "input".into(),
        Op::Param { .. } => "param".into(),
        Op::State { .. } => "state".into(),
        Op::Full { .. } => "full".into(),
        Op::Constant { .. } => "constant".into(),
        Op::Iota { .. } => "iota".into(),
        Op::DimValue { .. } => "dim_value".into(),
        Op::Unary(u) => u.name().into(),
        Op::Binary(b) => b.name().into(),
        Op::Where => "where".into(),
        Op::Cast { .. } => "cast".into(),
        Op::Reduce { op, .. } => format!("reduce.{}", op.name()),
        Op::Reshape { .. } => "reshape".into(),
        Op::Permute { .. } => "permute".into(),
        Op::Expand { .. } => "expand".into(),
        Op::Slice { .. } => "slice".into(),
        Op::Pad { .. } => "pad".into(),
        Op::Concat { .. } => "concat".into(),
        Op::Flip { .. } => "flip".into(),
        Op::IndexSelect { .. } => "index_select".into(),
        Op::Gather { .. } => "gather".into(),
        Op::Scatter { .. } => "scatter".into(),
        Op::SliceUpdate { .. } => "slice_update".into(),
        Op::MatMul { .. } => "matmul".into(),
    }
}

/// Every op family without a sub-op list (unary, binary and reduce ops come from their `ALL`).
const FAMILIES: [&str; 21] = [
    "input",
    "param",
    "state",
    "full",
    "constant",
    "iota",
    "dim_value",
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
];

fn expected_families() -> BTreeSet<String> {
    FAMILIES
        .iter()
        .map(|s| s.to_string())
        .chain(UnaryOp::ALL.iter().map(|u| u.name().to_string()))
        .chain(BinaryOp::ALL.iter().map(|b| b.name().to_string()))
        .chain(ReduceOp::ALL.iter().map(|r| format!("reduce.{}", r.name())))
        .collect()
}

/// One unit in the last place of `dt` at `x` (the larger one at a power of two).
fn ulp(dt: DType, x: f64) -> f64 {
    let (p, emin) = match dt {
        DType::F32 => (24, -126),
        DType::F16 => (11, -14),
        DType::BF16 => (8, -126),
        _ => (53, -1022),
    };
    let biased = ((x.abs().to_bits() >> 52) & 0x7ff) as i32;
    let e = (biased - 1023).max(emin);
    2f64.powi(e - (p - 1))
}

fn compare(got: &Tensor, exp: &Tensor, ulps: f64, atol: f64) -> Result<(), String> {
    if got.dtype() != exp.dtype() || got.shape() != exp.shape() {
        return Err(format!(
            "got {}{:?}, expected {}{:?}",
            got.dtype(),
            got.shape(),
            exp.dtype(),
            exp.shape()
        ));
    }
    let dt = exp.dtype();
    if !dt.is_float() {
        return if got == exp {
            Ok(())
        } else {
            Err(format!("got {got:?}\nexpected {exp:?}"))
        };
    }
    let (g, e) = (got.to_f64_vec().unwrap(), exp.to_f64_vec().unwrap());
    for (i, (&g, &e)) in g.iter().zip(&e).enumerate() {
        let ok = if e.is_nan() || g.is_nan() {
            e.is_nan() && g.is_nan()
        } else if g == e {
            true
        } else if e.is_infinite() || g.is_infinite() {
            false
        } else {
            let tol = if ulps == 0.0 {
                0.0
            } else if dt == DType::F64 {
                1e-12 * e.abs()
            } else {
                ulps * ulp(dt, e)
            };
            (g - e).abs() <= tol + atol
        };
        if !ok {
            return Err(format!(
                "element {i}: got {g:e}, expected {e:e} (ulps {ulps}, atol {atol:e})"
            ));
        }
    }
    Ok(())
}

#[test]
fn every_op_matches_numpy() {
    let st = SafeTensors::deserialize(FIXTURES).expect("fixture file parses");
    let (cases, count) = cases(&st);
    assert_eq!(cases.len(), count, "cases in the metadata vs its count");
    assert!(count > 500, "suspiciously few fixture cases: {count}");
    let mut used = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut per_family: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in &cases {
        let (g, env, expected) = build(&st, case, &mut used);
        for n in g.nodes() {
            seen.insert(family(&n.op));
        }
        let out = g.outputs()[0].1;
        *per_family.entry(family(&g.node(out).op)).or_default() += 1;
        let ulps = case.desc["ulps"].as_f64().expect("ulps");
        let atol = case.desc["atol"].as_f64().expect("atol");
        let result = run(&g, &env)
            .map_err(|e| format!("evaluation failed: {e}"))
            .and_then(|o| compare(o.get("out").expect("output"), &expected, ulps, atol));
        if let Err(msg) = result {
            failures.push(format!("{}: {msg}", case.name));
        }
        checked += 1;
    }
    assert_eq!(checked, count);
    let all: BTreeSet<String> = st.names().into_iter().cloned().collect();
    let unused: Vec<_> = all.difference(&used).collect();
    assert!(unused.is_empty(), "tensors no case uses: {unused:?}");
    let missing: Vec<_> = expected_families().difference(&seen).cloned().collect();
    assert!(
        missing.is_empty(),
        "ops without a fixture case: {missing:?}"
    );
    assert!(
        failures.is_empty(),
        "{} of {count} cases failed:\n{}",
        failures.len(),
        failures[..failures.len().min(40)].join("\n")
    );
}
