//! The reference interpreter: evaluates a [`Graph`] on concrete tensors. It is the oracle that
//! every rewrite and every backend is checked against, so it is written to be simple and
//! obviously right, not fast.
//!
//! ```
//! use kiln_ir::interp::{run, Env};
//! use kiln_ir::{DType, Graph, Shape, Tensor};
//!
//! let mut g = Graph::new();
//! let x = g.input("x", DType::F32, Shape::new(["seq"]))?;
//! let y = g.mul(x, x)?;
//! g.set_output("y", y)?;
//!
//! let env = Env::new().input("x", Tensor::from_vec(vec![3], vec![1.0f32, 2.0, 3.0])?);
//! let out = run(&g, &env)?;
//! assert_eq!(out.get("y").unwrap().as_slice::<f32>()?, &[1.0, 4.0, 9.0]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Evaluation
//!
//! - **Bindings.** Symbols take their values from [`Env::bind`] first; then, in node order,
//!   every given input, param or state whose graph dim is a bare symbol (`seq`, not
//!   `seq + 1`) binds that symbol to the tensor's size if it has no value yet. Then every dim
//!   of every given tensor is checked against its symbolic dim's value
//!   ([`EvalError::Shape`] names the tensor, the symbolic shape, the bindings and the actual
//!   shape). A symbol that no binding or tensor gives a value is an [`EvalError::Dim`] when a
//!   node needs it.
//! - **Only what is needed.** Nodes that no output or state update depends on are not
//!   evaluated; inputs, params and states they read may be left out of the [`Env`]. Tensors in
//!   the [`Env`] that the graph does not name are ignored.
//! - **Limits.** Every node's result shape is evaluated and checked before anything is
//!   allocated: a negative dim is [`EvalError::NegativeDim`], more than
//!   [`Env::max_elements`] elements (default [`DEFAULT_MAX_ELEMENTS`]) is
//!   [`EvalError::TooLarge`]. No graph accepted by [`Graph::push`] makes the interpreter panic,
//!   whatever the bindings.
//!
//! # Numerics
//!
//! - **Floats** are computed in f64 and rounded to the node's dtype after every op: f32 with
//!   Rust's `as f32`, f16 and bf16 with one correct rounding (to nearest, ties to even,
//!   overflowing to infinity) straight from f64 — never through f32, which could round twice.
//!   Every float value is therefore exactly a value of its dtype.
//! - **Integers** are computed in i64 and wrapped (two's complement) to the dtype's width after
//!   every op: `add`, `sub`, `mul`, `neg`, `abs` (`abs(i8::MIN) == i8::MIN`), sums, products
//!   and matmul all wrap. **Bools** are bools.
//! - **Transcendentals** use Rust's f64 functions (`exp`, `ln`, `sqrt`, `sin`, `cos`, `tanh`,
//!   `powf`) and `libm::erf`; `rsqrt(x) = 1 / sqrt(x)` and `recip(x) = 1 / x` in f64.
//! - `round` is half-to-even; `floor`, `ceil` as usual; `sign` is -1, 0 or 1 with
//!   `sign(±0) = +0` and `sign(NaN) = NaN`.
//! - Integer `div` is floor division and `mod` floor modulo with the sign of the divisor (as
//!   Python and `torch.remainder`); `x / 0 == 0` and `x % 0 == 0` (NumPy's results);
//!   `MIN / -1` wraps to `MIN`. Float `div` is IEEE; float `mod` is `a - floor(a / b) * b`
//!   computed in f64 (`torch.remainder`'s definition), so `x mod 0` and `x mod ±inf` are NaN.
//! - `max`/`min` (binary and reductions) return NaN if any operand is NaN. Comparisons follow
//!   IEEE (`NaN != NaN`). On bools, `lt`/`gt` order `false < true`.
//! - **Reductions**: float `sum` and `prod` accumulate in f64 in row-major order and round once
//!   at the end (for every float dtype, f16 and bf16 included); integer ones wrap. `sum` of no
//!   elements is 0, `prod` 1. `max`, `min` and `argmax` of no elements (a reduced axis of
//!   size 0 while the result is not empty) are [`EvalError::EmptyReduction`]. `argmax`
//!   returns the first index of the maximum as i64; a NaN counts as larger than everything,
//!   so the first NaN wins.
//! - **Cast**: float to float rounds (as above); float to integer truncates toward zero and
//!   saturates at the type's range, NaN becomes 0; integer to integer wraps; integer to f32 or
//!   f64 rounds once (to f16/bf16 through f64, which only matters beyond 2^53); anything to
//!   bool is `!= 0` (so NaN is true); bool to a number is 0 or 1. A block-quantized operand
//!   is dequantized with [`crate::quant::dequantize_to_vec`] and then cast from f32 values.
//! - **MatMul**: the flags swap the last two axes of that operand; batch axes broadcast (NumPy
//!   rules); products accumulate in f64 (integers: wrapping i64) in order of `k` and round
//!   once to the inferred output dtype. Mixed float dtypes are exact in f64. A
//!   block-quantized operand (`b` stored `[.., n, k]` with `trans_b`, or `a` stored
//!   `[.., m, k]`) is dequantized first.
//! - `full` and `pad` values are rounded to the dtype; `iota` values are the index, rounded
//!   to a float dtype or wrapped to an integer dtype's width.
//!
//! # Views and indexing
//!
//! - `slice` needs `0 <= start <= end <= size` once the symbols are bound
//!   ([`EvalError::Bounds`]); it takes `start, start + step, ...` below `end`. `slice_update`
//!   needs `0 <= start` and `start + len(src) <= size`, also [`EvalError::Bounds`]. A
//!   negative padding after binding is [`EvalError::NegativeDim`].
//! - `index_select`, `gather` and `scatter` indices must lie in `0..size` of the indexed
//!   axis: a negative index is an error, never counted from the end
//!   ([`EvalError::IndexOutOfBounds`] names the index and the size). Every index is checked,
//!   even when the result is empty.
//! - `gather` and `scatter` follow PyTorch: the indices have the operand's rank and are no
//!   larger than it on every other axis (checked at run time, [`EvalError::OperandShape`]).
//!   `scatter` writes in row-major order of the indices, so with duplicates the last write
//!   wins; `scatter` with add accumulates floats in f64 and rounds once per element.
//! - `index_select` on a block-quantized operand (along an axis before the last) copies whole
//!   rows of blocks; the result stays quantized.

mod elementwise;
mod error;
mod index;
mod matmul;
mod movement;
mod reduce;
mod value;

pub use error::EvalError;

use crate::dim::{Bindings, Dim};
use crate::dtype::DType;
use crate::graph::{Graph, Node, NodeId};
use crate::op::Op;
use crate::shape::Shape;
use crate::tensor::Tensor;
use error::Ctx;
use std::collections::HashMap;
use value::Value;

/// The default for [`Env::max_elements`]: 2^28 elements per value (the interpreter holds
/// each element in 8 bytes).
pub const DEFAULT_MAX_ELEMENTS: usize = 1 << 28;

/// What a graph is evaluated on: tensors for its inputs, params and states, and values for
/// its symbols. Built in builder style:
///
/// ```
/// # use kiln_ir::{interp::Env, Tensor};
/// let env = Env::new()
///     .input("tokens", Tensor::from_vec(vec![3], vec![1i64, 2, 3]).unwrap())
///     .bind("past", 0);
/// ```
#[derive(Clone, Debug)]
pub struct Env {
    inputs: HashMap<String, Tensor>,
    params: HashMap<String, Tensor>,
    states: HashMap<String, Tensor>,
    bindings: Bindings,
    max_elements: usize,
}

impl Default for Env {
    fn default() -> Env {
        Env {
            inputs: HashMap::new(),
            params: HashMap::new(),
            states: HashMap::new(),
            bindings: Bindings::new(),
            max_elements: DEFAULT_MAX_ELEMENTS,
        }
    }
}

impl Env {
    /// An empty environment.
    pub fn new() -> Env {
        Env::default()
    }

    /// Gives the input called `name`.
    pub fn input(mut self, name: &str, value: Tensor) -> Env {
        self.set_input(name, value);
        self
    }

    /// Gives the param called `name`.
    pub fn param(mut self, name: &str, value: Tensor) -> Env {
        self.set_param(name, value);
        self
    }

    /// Gives the current value of the state called `name`.
    pub fn state(mut self, name: &str, value: Tensor) -> Env {
        self.set_state(name, value);
        self
    }

    /// Binds `symbol` to `value` (explicit bindings win over those inferred from shapes).
    pub fn bind(mut self, symbol: &str, value: i64) -> Env {
        self.bindings.set(symbol, value);
        self
    }

    /// Adds every binding of `bindings` (replacing earlier values).
    pub fn with_bindings(mut self, bindings: &Bindings) -> Env {
        for (k, v) in bindings.iter() {
            self.bindings.set(k, v);
        }
        self
    }

    /// Sets the limit on the number of elements of any one value (see
    /// [`EvalError::TooLarge`]).
    pub fn max_elements(mut self, limit: usize) -> Env {
        self.max_elements = limit;
        self
    }

    /// Gives (or replaces) the input called `name`.
    pub fn set_input(&mut self, name: &str, value: Tensor) {
        self.inputs.insert(name.to_string(), value);
    }

    /// Gives (or replaces) the param called `name`.
    pub fn set_param(&mut self, name: &str, value: Tensor) {
        self.params.insert(name.to_string(), value);
    }

    /// Gives (or replaces) the state called `name`.
    pub fn set_state(&mut self, name: &str, value: Tensor) {
        self.states.insert(name.to_string(), value);
    }

    /// Binds (or rebinds) `symbol`.
    pub fn set_binding(&mut self, symbol: &str, value: i64) {
        self.bindings.set(symbol, value);
    }

    /// The explicit bindings.
    pub fn bindings(&self) -> &Bindings {
        &self.bindings
    }

    /// The tensor given for a source node (`Input`, `Param` or `State`), if any.
    fn source(&self, op: &Op) -> Option<&Tensor> {
        match op {
            Op::Input { name, .. } => self.inputs.get(name),
            Op::Param { name, .. } => self.params.get(name),
            Op::State { name, .. } => self.states.get(name),
            _ => None,
        }
    }
}

/// The results of [`run`].
#[derive(Clone, Debug, PartialEq)]
pub struct Outputs {
    /// Every output of the graph, in [`Graph::outputs`] order.
    pub outputs: Vec<(String, Tensor)>,
    /// The new value of every updated state, in [`Graph::state_updates`] order.
    pub states: Vec<(String, Tensor)>,
    /// The bindings used: the given ones plus those inferred from tensor shapes.
    pub bindings: Bindings,
}

impl Outputs {
    /// The output called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.outputs.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The new value of the state called `name`.
    pub fn state(&self, name: &str) -> Option<&Tensor> {
        self.states.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// Evaluates every output and state update of `graph` on `env`.
pub fn run(graph: &Graph, env: &Env) -> Result<Outputs, EvalError> {
    let roots: Vec<NodeId> = graph.result_nodes().collect();
    let (mut values, bindings) = evaluate(graph, env, &roots)?;
    let states = values.split_off(graph.outputs().len());
    let name = |(n, _): &(String, NodeId)| n.clone();
    Ok(Outputs {
        outputs: graph.outputs().iter().map(name).zip(values).collect(),
        states: graph.state_updates().iter().map(name).zip(states).collect(),
        bindings,
    })
}

/// Evaluates the given nodes of `graph` (any nodes, not only outputs) on `env`, returning
/// their values in the same order.
pub fn run_nodes(graph: &Graph, env: &Env, nodes: &[NodeId]) -> Result<Vec<Tensor>, EvalError> {
    evaluate(graph, env, nodes).map(|(v, _)| v)
}

fn evaluate(
    graph: &Graph,
    env: &Env,
    roots: &[NodeId],
) -> Result<(Vec<Tensor>, Bindings), EvalError> {
    let nodes = graph.nodes();
    let n = nodes.len();
    if let Some(&bad) = roots.iter().find(|r| r.index() >= n) {
        return Err(EvalError::UnknownNode { node: bad, len: n });
    }
    // Which nodes are needed, and how many times each value is still to be read.
    let mut needed = vec![false; n];
    let mut uses = vec![0usize; n];
    for r in roots {
        needed[r.index()] = true;
        uses[r.index()] += 1;
    }
    for i in (0..n).rev() {
        if needed[i] {
            for inp in &nodes[i].inputs {
                needed[inp.index()] = true;
                uses[inp.index()] += 1;
            }
        }
    }
    let bindings = bind(graph, env, &needed)?;
    let mut values: Vec<Option<Value>> = vec![None; n];
    for i in 0..n {
        if !needed[i] {
            continue;
        }
        let id = NodeId(i as u32);
        let v = eval_node(&nodes[i], id, env, &bindings, &values)?;
        values[i] = Some(v);
        for inp in &nodes[i].inputs {
            let u = &mut uses[inp.index()];
            *u -= 1;
            if *u == 0 {
                values[inp.index()] = None;
            }
        }
    }
    let mut out = Vec::with_capacity(roots.len());
    for r in roots {
        let ctx = ctx_of(graph.node(*r), *r);
        let v = values[r.index()]
            .clone()
            .ok_or_else(|| ctx.internal("value of a root was dropped"))?;
        out.push(v.into_tensor(&ctx)?);
    }
    Ok((out, bindings))
}

fn ctx_of(node: &Node, id: NodeId) -> Ctx {
    Ctx {
        node: id,
        op: node.op.name(),
    }
}

/// The source's name, dtype and shape, for `Input`, `Param` and `State` nodes.
fn source_decl(op: &Op) -> Option<(&str, DType, &Shape)> {
    match op {
        Op::Input { name, dtype, shape }
        | Op::Param { name, dtype, shape }
        | Op::State { name, dtype, shape } => Some((name, *dtype, shape)),
        _ => None,
    }
}

/// Binds symbols from the env and from the given tensors' shapes, then checks every given
/// tensor against its node's type.
fn bind(graph: &Graph, env: &Env, needed: &[bool]) -> Result<Bindings, EvalError> {
    let mut b = env.bindings.clone();
    let mut given = Vec::new();
    for (i, node) in graph.nodes().iter().enumerate() {
        let Some((name, dtype, shape)) = source_decl(&node.op) else {
            continue;
        };
        let id = NodeId(i as u32);
        let op = node.op.name();
        let Some(t) = env.source(&node.op) else {
            if needed[i] {
                return Err(EvalError::Missing {
                    node: id,
                    op,
                    name: name.to_string(),
                });
            }
            continue;
        };
        if t.dtype() != dtype {
            return Err(EvalError::DType {
                node: id,
                op,
                name: name.to_string(),
                expected: dtype,
                actual: t.dtype(),
            });
        }
        if t.shape().len() != shape.rank() {
            return Err(EvalError::Shape {
                node: id,
                op,
                name: name.to_string(),
                expected: shape.clone(),
                bindings: b,
                actual: t.shape().to_vec(),
            });
        }
        for (d, &size) in shape.dims().iter().zip(t.shape()) {
            if let Some(sym) = d.as_symbol() {
                if b.get(sym).is_none() {
                    b.set(sym, i64::try_from(size).unwrap_or(i64::MAX));
                }
            }
        }
        given.push((id, op, name, shape, t));
    }
    for (id, op, name, shape, t) in given {
        for (d, &size) in shape.dims().iter().zip(t.shape()) {
            let v = d.eval(&b).map_err(|source| EvalError::Dim {
                node: id,
                op: op.clone(),
                source,
            })?;
            if usize::try_from(v).ok() != Some(size) {
                return Err(EvalError::Shape {
                    node: id,
                    op,
                    name: name.to_string(),
                    expected: shape.clone(),
                    bindings: b,
                    actual: t.shape().to_vec(),
                });
            }
        }
    }
    Ok(b)
}

/// Evaluates one dim attribute.
fn eval_dim(ctx: &Ctx, d: &Dim, b: &Bindings) -> Result<i64, EvalError> {
    d.eval(b).map_err(|e| ctx.dim(e))
}

/// Evaluates a result shape, rejecting negative dims and too many elements.
fn eval_shape(
    ctx: &Ctx,
    shape: &Shape,
    b: &Bindings,
    limit: usize,
) -> Result<Vec<usize>, EvalError> {
    let mut dims = Vec::with_capacity(shape.rank());
    for (i, d) in shape.dims().iter().enumerate() {
        let v = eval_dim(ctx, d, b)?;
        if v < 0 {
            return Err(EvalError::NegativeDim {
                node: ctx.node,
                op: ctx.op.clone(),
                what: format!("dim {i} of the result shape {shape}"),
                dim: d.to_string(),
                value: v,
                bindings: b.clone(),
            });
        }
        dims.push(v);
    }
    let elements = dims.iter().fold(1u128, |a, &d| a.saturating_mul(d as u128));
    let too_large = || EvalError::TooLarge {
        node: ctx.node,
        op: ctx.op.clone(),
        shape: dims.clone(),
        elements,
        limit,
    };
    if elements > limit as u128 {
        return Err(too_large());
    }
    dims.iter()
        .map(|&d| usize::try_from(d).map_err(|_| too_large()))
        .collect()
}

/// Checks `0 <= start <= end <= size` for `slice` and `slice_update`.
fn check_range(ctx: &Ctx, axis: usize, start: i64, end: i64, size: usize) -> Result<(), EvalError> {
    let ok = 0 <= start && start <= end && i128::from(end) <= size as i128;
    if ok {
        Ok(())
    } else {
        Err(EvalError::Bounds {
            node: ctx.node,
            op: ctx.op.clone(),
            axis,
            start,
            end,
            size,
        })
    }
}

fn eval_node(
    node: &Node,
    id: NodeId,
    env: &Env,
    b: &Bindings,
    values: &[Option<Value>],
) -> Result<Value, EvalError> {
    let ctx = ctx_of(node, id);
    let args: Vec<&Value> = node
        .inputs
        .iter()
        .map(|i| {
            values
                .get(i.index())
                .and_then(Option::as_ref)
                .ok_or_else(|| ctx.internal(format!("operand {i} has no value")))
        })
        .collect::<Result<_, _>>()?;
    let arg = |j: usize| {
        args.get(j)
            .copied()
            .ok_or_else(|| ctx.internal(format!("missing operand {j}")))
    };
    // Checks that need concrete values and must come before the result shape is evaluated
    // (a reversed slice would otherwise show up as a negative result dim).
    let mut range = (0usize, 0usize);
    let mut pads = Vec::new();
    match &node.op {
        Op::Slice {
            axis, start, end, ..
        } => {
            let x = arg(0)?;
            let size = *x.shape.get(*axis).ok_or_else(|| ctx.internal("axis"))?;
            let (s, e) = (eval_dim(&ctx, start, b)?, eval_dim(&ctx, end, b)?);
            check_range(&ctx, *axis, s, e, size)?;
            range = (s as usize, e as usize);
        }
        Op::SliceUpdate { axis, start } => {
            let (dst, src) = (arg(0)?, arg(1)?);
            let size = *dst.shape.get(*axis).ok_or_else(|| ctx.internal("axis"))?;
            let len = *src.shape.get(*axis).ok_or_else(|| ctx.internal("axis"))?;
            let s = eval_dim(&ctx, start, b)?;
            let len = i64::try_from(len).unwrap_or(i64::MAX);
            check_range(&ctx, *axis, s, s.saturating_add(len), size)?;
            range = (s as usize, 0);
        }
        Op::Pad { pads: p, .. } => {
            for (i, (lo, hi)) in p.iter().enumerate() {
                let mut pair = [0usize; 2];
                for (k, (d, side)) in [(lo, "before"), (hi, "after")].into_iter().enumerate() {
                    let v = eval_dim(&ctx, d, b)?;
                    pair[k] = usize::try_from(v).map_err(|_| EvalError::NegativeDim {
                        node: id,
                        op: ctx.op.clone(),
                        what: format!("padding {side} axis {i}"),
                        dim: d.to_string(),
                        value: v,
                        bindings: b.clone(),
                    })?;
                }
                pads.push((pair[0], pair[1]));
            }
        }
        _ => {}
    }
    let shape = eval_shape(&ctx, &node.ty.shape, b, env.max_elements)?;
    let v = match &node.op {
        Op::Input { .. } | Op::Param { .. } | Op::State { .. } => {
            let t = env
                .source(&node.op)
                .ok_or_else(|| ctx.internal("source tensor vanished"))?;
            Value::from_tensor(t)
        }
        Op::Constant { value } => Value::from_tensor(value),
        Op::Full { value, dtype, .. } => elementwise::full(&ctx, *value, *dtype, &shape)?,
        Op::Iota { axis, dtype, .. } => elementwise::iota(&ctx, *axis, *dtype, &shape)?,
        Op::DimValue { dim, dtype } => {
            let v = eval_dim(&ctx, dim, b)?;
            elementwise::full(&ctx, crate::Scalar::Int(v), *dtype, &shape)?
        }
        Op::Unary(u) => elementwise::unary(&ctx, *u, arg(0)?)?,
        Op::Binary(op) => elementwise::binary(&ctx, *op, arg(0)?, arg(1)?)?,
        Op::Where => elementwise::where_(&ctx, arg(0)?, arg(1)?, arg(2)?)?,
        Op::Cast { to } => elementwise::cast(&ctx, arg(0)?, *to)?,
        Op::Reduce { op, axes, keepdim } => reduce::reduce(&ctx, *op, axes, *keepdim, arg(0)?)?,
        Op::Reshape { .. } => movement::reshape(&ctx, arg(0)?, &shape)?,
        Op::Permute { perm } => movement::permute(&ctx, arg(0)?, perm)?,
        Op::Expand { .. } => movement::expand(&ctx, arg(0)?, &shape)?,
        Op::Slice { axis, step, .. } => {
            let step = usize::try_from(*step)
                .ok()
                .filter(|&s| s >= 1)
                .ok_or_else(|| ctx.internal("slice step below 1"))?;
            let len = (range.1 - range.0).div_ceil(step);
            movement::slice(&ctx, arg(0)?, *axis, range.0, step, len)?
        }
        Op::Pad { value, .. } => movement::pad(&ctx, arg(0)?, &pads, *value)?,
        Op::Concat { axis } => movement::concat(&ctx, &args, *axis)?,
        Op::Flip { axes } => movement::flip(&ctx, arg(0)?, axes)?,
        Op::IndexSelect { axis } => index::index_select(&ctx, arg(0)?, *axis, arg(1)?)?,
        Op::Gather { axis } => index::gather(&ctx, arg(0)?, *axis, arg(1)?)?,
        Op::Scatter { axis, reduce } => {
            index::scatter(&ctx, arg(0)?, *axis, arg(1)?, arg(2)?, *reduce)?
        }
        Op::SliceUpdate { axis, .. } => {
            index::slice_update(&ctx, arg(0)?, arg(1)?, *axis, range.0)?
        }
        Op::MatMul { trans_a, trans_b } => {
            matmul::matmul(&ctx, arg(0)?, arg(1)?, *trans_a, *trans_b, node.ty.dtype)?
        }
    };
    // The interpreter's own invariant: every value has its node's type.
    let len_ok = match v.dtype {
        DType::Quant(q) => q.bytes_for(v.numel()) == Some(v.data.len()),
        _ => v.data.len() == v.numel(),
    };
    if v.dtype != node.ty.dtype || v.shape != shape || !len_ok {
        return Err(ctx.internal(format!(
            "result {}{:?} with {} data elements, the node's type is {} = {shape:?}",
            v.dtype,
            v.shape,
            v.data.len(),
            node.ty
        )));
    }
    Ok(v)
}
