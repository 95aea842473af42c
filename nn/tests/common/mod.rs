//! Shared helpers for the nn and model tests (`models/tests` includes this file by path):
//! loading PyTorch-made fixtures and comparing tensors.
#![allow(dead_code)]

use kiln_ir::interp::{run, Env};
use kiln_ir::{Graph, Tensor};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;

/// A fixture file: tensors by name plus the JSON metadata stored under the `cases` key.
pub struct Fixture {
    pub tensors: HashMap<String, Tensor>,
    pub meta: serde_json::Value,
}

/// Loads `<crate>/tests/fixtures/<file>` of the crate whose test includes this module.
pub fn load(file: &str) -> Fixture {
    let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (_, header) = SafeTensors::read_metadata(&bytes).expect("safetensors header");
    let meta = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("cases"))
        .map(|s| serde_json::from_str(s).expect("metadata `cases` is JSON"))
        .unwrap_or(serde_json::Value::Null);
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        tensors.insert(name.to_string(), to_tensor(&name, &view));
    }
    Fixture { tensors, meta }
}

fn to_tensor(name: &str, v: &safetensors::tensor::TensorView<'_>) -> Tensor {
    let shape = v.shape().to_vec();
    let d = v.data();
    macro_rules! le {
        ($t:ty, $n:expr) => {
            d.chunks_exact($n)
                .map(|c| <$t>::from_le_bytes(c.try_into().unwrap()))
                .collect::<Vec<$t>>()
        };
    }
    let t = match v.dtype() {
        Dtype::F32 => Tensor::from_vec(shape, le!(f32, 4)),
        Dtype::F64 => Tensor::from_vec(shape, le!(f64, 8)),
        Dtype::I64 => Tensor::from_vec(shape, le!(i64, 8)),
        Dtype::I32 => Tensor::from_vec(shape, le!(i32, 4)),
        Dtype::U8 => Tensor::from_vec(shape, d.to_vec()),
        Dtype::BOOL => Tensor::from_vec(shape, d.iter().map(|&b| b != 0).collect::<Vec<bool>>()),
        Dtype::F16 => Tensor::from_vec(
            shape,
            le!(u16, 2)
                .into_iter()
                .map(half::f16::from_bits)
                .collect::<Vec<_>>(),
        ),
        Dtype::BF16 => Tensor::from_vec(
            shape,
            le!(u16, 2)
                .into_iter()
                .map(half::bf16::from_bits)
                .collect::<Vec<_>>(),
        ),
        other => panic!("{name}: fixture dtype {other:?} not handled"),
    };
    t.unwrap_or_else(|e| panic!("{name}: {e}"))
}

impl Fixture {
    /// A tensor by name (panics with the name if missing).
    pub fn get(&self, name: &str) -> &Tensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("fixture has no tensor `{name}`"))
    }

    /// Every tensor whose name starts with `prefix`, with the prefix removed (a state_dict).
    pub fn with_prefix(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v.clone())))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// Runs `graph` with the given params and inputs; returns the named output.
pub fn eval(
    graph: &Graph,
    params: &[(String, Tensor)],
    inputs: &[(&str, Tensor)],
    output: &str,
) -> Tensor {
    let mut env = Env::new();
    for (k, v) in params {
        env.set_param(k, v.clone());
    }
    for (k, v) in inputs {
        env.set_input(k, v.clone());
    }
    let out = run(graph, &env).unwrap_or_else(|e| panic!("interpreter: {e}"));
    out.get(output)
        .unwrap_or_else(|| panic!("no output `{output}`"))
        .clone()
}

/// Asserts `|got - want| <= atol + rtol * |want|` elementwise, naming the first bad element.
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, rtol: f64, atol: f64) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let (g, w) = (got.to_f64_vec().unwrap(), want.to_f64_vec().unwrap());
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let err = (a - b).abs();
        let tol = atol + rtol * b.abs();
        let ok = err <= tol || (a.is_nan() && b.is_nan()) || a == b;
        assert!(
            ok,
            "{what}: element {i}: got {a}, want {b} (|diff| {err:e} > tol {tol:e})"
        );
    }
}
