//! The loader of `fixtures/ops.safetensors` (made by `scripts/fixtures/make_op_fixtures.py`):
//! each case is one op applied to stored operands. [`build`] makes the case's graph, the
//! interpreter environment and the expected (NumPy) result. Shared by `interp_fixtures.rs`
//! and by the CPU backend's tests in `runtime/tests/` (included there with `#[path]`).
#![allow(dead_code)]

use std::collections::BTreeSet;

use half::{bf16, f16};
use kiln_ir::interp::Env;
use kiln_ir::{
    BinaryOp, DType, Dim, Graph, NodeId, ReduceOp, Scalar, ScatterReduce, Shape, Storage, Tensor,
    UnaryOp,
};
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;
use serde_json::Value as Json;

/// The fixture file's bytes.
pub static FIXTURES: &[u8] = include_bytes!("../fixtures/ops.safetensors");

/// One fixture case: its name and its JSON description.
pub struct Case {
    /// The case name (`binary.add.f32.grid`).
    pub name: String,
    /// The description (op, attrs, inputs, bindings, tolerances).
    pub desc: Json,
}

pub fn cases(st: &SafeTensors) -> (Vec<Case>, usize) {
    let (_, metadata) = SafeTensors::read_metadata(FIXTURES).expect("fixture header parses");
    let meta = metadata
        .metadata()
        .as_ref()
        .expect("fixture has __metadata__");
    let count: usize = meta["count"].parse().expect("count is a number");
    let mut out: Vec<Case> = meta
        .iter()
        .filter(|(k, _)| k.as_str() != "count")
        .map(|(k, v)| Case {
            name: k.clone(),
            desc: serde_json::from_str(v).unwrap_or_else(|e| panic!("{k}: bad JSON: {e}")),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!st.names().is_empty());
    (out, count)
}

pub fn dtype(name: &str) -> DType {
    DType::from_name(name).unwrap_or_else(|| panic!("unknown dtype {name}"))
}

pub fn dim(v: &Json) -> Dim {
    match v {
        Json::Number(n) => Dim::constant(n.as_i64().expect("integer dim")),
        Json::String(s) => Dim::parse(s).expect("dim expression parses"),
        _ => panic!("bad dim {v}"),
    }
}

pub fn shape(v: &Json) -> Shape {
    Shape(
        v.as_array()
            .expect("shape is a list")
            .iter()
            .map(dim)
            .collect(),
    )
}

pub fn usizes(v: &Json) -> Vec<usize> {
    v.as_array()
        .expect("list")
        .iter()
        .map(|x| x.as_u64().expect("non-negative integer") as usize)
        .collect()
}

pub fn scalar(v: &Json) -> Scalar {
    v.as_str()
        .expect("scalar string")
        .parse()
        .expect("scalar parses")
}

pub fn chunks<const N: usize>(b: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    b.chunks_exact(N).map(|c| c.try_into().expect("chunk"))
}

/// A stored tensor as a Kiln tensor of `dt` (raw blocks for a quantized `dt`).
pub fn tensor(view: &TensorView, dt: DType, shape: Vec<usize>) -> Tensor {
    let b = view.data();
    let storage = match dt {
        DType::F32 => Storage::F32(chunks(b).map(f32::from_le_bytes).collect()),
        DType::F16 => Storage::F16(
            chunks(b)
                .map(|c| f16::from_bits(u16::from_le_bytes(c)))
                .collect(),
        ),
        DType::BF16 => Storage::BF16(
            chunks(b)
                .map(|c| bf16::from_bits(u16::from_le_bytes(c)))
                .collect(),
        ),
        DType::F64 => Storage::F64(chunks(b).map(f64::from_le_bytes).collect()),
        DType::I8 => Storage::I8(b.iter().map(|&x| x as i8).collect()),
        DType::I16 => Storage::I16(chunks(b).map(i16::from_le_bytes).collect()),
        DType::I32 => Storage::I32(chunks(b).map(i32::from_le_bytes).collect()),
        DType::I64 => Storage::I64(chunks(b).map(i64::from_le_bytes).collect()),
        DType::U8 => Storage::U8(b.to_vec()),
        DType::U32 => Storage::U32(chunks(b).map(u32::from_le_bytes).collect()),
        DType::Bool => Storage::Bool(b.iter().map(|&x| x != 0).collect()),
        DType::Quant(q) => Storage::Quant(q, b.to_vec()),
    };
    Tensor::new(shape, storage).expect("stored tensor fits its shape")
}

/// The safetensors dtype name of a plain Kiln dtype.
pub fn st_dtype(dt: DType) -> &'static str {
    match dt {
        DType::Quant(_) => "U8",
        DType::Bool => "BOOL",
        DType::F32 => "F32",
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        DType::F64 => "F64",
        DType::I8 => "I8",
        DType::I16 => "I16",
        DType::I32 => "I32",
        DType::I64 => "I64",
        DType::U8 => "U8",
        DType::U32 => "U32",
    }
}

pub fn load(st: &SafeTensors, name: &str, dt: DType, shape: Option<Vec<usize>>) -> Tensor {
    let view = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("tensor {name}: {e}"));
    assert_eq!(
        format!("{:?}", view.dtype()),
        st_dtype(dt),
        "{name}: stored dtype vs {dt}"
    );
    let shape = shape.unwrap_or_else(|| view.shape().to_vec());
    tensor(&view, dt, shape)
}

/// Builds the case's graph and environment, and loads its expected result.
pub fn build(st: &SafeTensors, case: &Case, used: &mut BTreeSet<String>) -> (Graph, Env, Tensor) {
    let (g, env, expected, _) = build_with_operands(st, case, used);
    (g, env, expected)
}

/// A graph operand fed at run time: its kind (`input`, `param` or `state`), name and value.
pub type Operand = (&'static str, String, Tensor);

/// [`build`], also returning the operands the environment holds (to feed another executor).
pub fn build_with_operands(
    st: &SafeTensors,
    case: &Case,
    used: &mut BTreeSet<String>,
) -> (Graph, Env, Tensor, Vec<Operand>) {
    let mut operands: Vec<Operand> = Vec::new();
    let d = &case.desc;
    let name = &case.name;
    let mut g = Graph::new();
    let mut env = Env::new();
    for (k, v) in d["bindings"].as_object().expect("bindings") {
        env = env.bind(k, v.as_i64().expect("binding value"));
    }
    let mut ids: Vec<NodeId> = Vec::new();
    for (i, inp) in d["inputs"].as_array().expect("inputs").iter().enumerate() {
        let tname = format!("{name}.in{i}");
        let dt = dtype(inp["dtype"].as_str().expect("dtype"));
        let sym = shape(&inp["shape"]);
        let concrete = if dt.is_quantized() {
            Some(usizes(&inp["shape"]))
        } else {
            None
        };
        let t = load(st, &tname, dt, concrete);
        used.insert(tname);
        let arg = format!("in{i}");
        let kind = inp["kind"].as_str().expect("kind");
        if let Some(k) = ["input", "param", "state"].into_iter().find(|k| *k == kind) {
            operands.push((k, arg.clone(), t.clone()));
        }
        let id = match kind {
            "input" => {
                env.set_input(&arg, t);
                g.input(&arg, dt, sym)
            }
            "param" => {
                env.set_param(&arg, t);
                g.param(&arg, dt, sym)
            }
            "state" => {
                env.set_state(&arg, t);
                g.state(&arg, dt, sym)
            }
            "constant" => g.constant(t),
            k => panic!("{name}: unknown kind {k}"),
        }
        .unwrap_or_else(|e| panic!("{name}: operand {i}: {e}"));
        ids.push(id);
    }
    let a = &d["attrs"];
    let axis = || a["axis"].as_u64().expect("axis") as usize;
    let x = ids.first().copied().unwrap_or(NodeId(0));
    let fname = a["fn"].as_str().unwrap_or_default();
    let out = match d["op"].as_str().expect("op") {
        "unary" => {
            let u = UnaryOp::ALL.into_iter().find(|u| u.name() == fname);
            g.unary(u.expect("unary op"), x)
        }
        "binary" => {
            let b = BinaryOp::ALL.into_iter().find(|b| b.name() == fname);
            g.binary(b.expect("binary op"), x, ids[1])
        }
        "where" => g.where_(x, ids[1], ids[2]),
        "cast" => g.cast(x, dtype(a["to"].as_str().expect("to"))),
        "reduce" => {
            let r = ReduceOp::ALL.into_iter().find(|r| r.name() == fname);
            let keep = a["keepdim"].as_bool().expect("keepdim");
            g.reduce(r.expect("reduce op"), x, &usizes(&a["axes"]), keep)
        }
        "reshape" => g.reshape(x, shape(&a["shape"])),
        "permute" => g.permute(x, &usizes(&a["perm"])),
        "expand" => g.expand(x, shape(&a["shape"])),
        "slice" => g.slice(
            x,
            axis(),
            dim(&a["start"]),
            dim(&a["end"]),
            a["step"].as_i64().expect("step"),
        ),
        "pad" => {
            let pads = a["pads"]
                .as_array()
                .expect("pads")
                .iter()
                .map(|p| (dim(&p[0]), dim(&p[1])))
                .collect();
            g.pad(x, pads, scalar(&a["value"]))
        }
        "concat" => g.concat(&ids, axis()),
        "flip" => g.flip(x, &usizes(&a["axes"])),
        "index_select" => g.index_select(x, axis(), ids[1]),
        "gather" => g.gather(x, axis(), ids[1]),
        "scatter" => {
            let reduce = match a["reduce"].as_str().expect("reduce") {
                "assign" => ScatterReduce::Assign,
                "add" => ScatterReduce::Add,
                r => panic!("{name}: scatter reduce {r}"),
            };
            g.scatter(x, axis(), ids[1], ids[2], reduce)
        }
        "slice_update" => g.slice_update(x, ids[1], axis(), dim(&a["start"])),
        "matmul" => g.matmul_t(
            x,
            ids[1],
            a["trans_a"].as_bool().expect("trans_a"),
            a["trans_b"].as_bool().expect("trans_b"),
        ),
        "full" => g.full(
            scalar(&a["value"]),
            dtype(a["dtype"].as_str().expect("dtype")),
            shape(&a["shape"]),
        ),
        "iota" => g.iota(
            axis(),
            dtype(a["dtype"].as_str().expect("dtype")),
            shape(&a["shape"]),
        ),
        "dim_value" => g.dim_value(dim(&a["dim"]), dtype(a["dtype"].as_str().expect("dtype"))),
        "identity" => Ok(x),
        op => panic!("{name}: unknown op {op}"),
    }
    .unwrap_or_else(|e| panic!("{name}: building the graph: {e}"));
    g.set_output("out", out).expect("set output");
    let out_dt = dtype(d["out"].as_str().expect("out dtype"));
    let out_shape = d.get("out_shape").map(usizes);
    let oname = format!("{name}.out");
    let expected = load(st, &oname, out_dt, out_shape);
    used.insert(oname);
    (g, env, expected, operands)
}
