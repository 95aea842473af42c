//! The e-graph language mirroring [`kiln_ir::Op`], and the type analysis of its e-classes.
//!
//! A node ([`KNode`]) is an interned op key ([`OpKey`]) plus its children. The ops themselves
//! (every attribute, symbolic dims included) live in an interning table inside the e-graph's
//! analysis ([`KilnAnalysis`]), so a node is small, `Ord` and `Hash` cheaply, and two nodes
//! are equal exactly when their ops and children are. Keys are handed out in insertion order,
//! which is deterministic.
//!
//! Every e-class carries a [`ClassData`]: its [`TensorType`], inferred with
//! [`kiln_ir::infer_type`] (the inference [`kiln_ir::Graph::push`] runs), and, when every
//! element of the class is known to be one value, that value (a `full`, possibly seen
//! through views), and whether it is *params-only* (see [`ClassData::params_only`]). Two merged classes must have equal types: a rewrite that changes a type is
//! a bug, and merging such classes panics in debug builds.

use egg::{DidMerge, Id, Language};
use kiln_ir::{infer_type, DType, Graph, Op, Scalar, Shape, TensorType};
use std::collections::HashMap;
use std::fmt;

/// The e-graph used by the optimizer.
pub type KGraph = egg::EGraph<KNode, KilnAnalysis>;

/// An interned [`Op`]: an index into the [`KilnAnalysis`] op table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpKey(pub u32);

/// One e-node: an interned op and its operand e-classes, in the op's order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KNode {
    /// The op, interned in [`KilnAnalysis`].
    pub op: OpKey,
    /// Operand e-classes.
    pub children: Vec<Id>,
}

impl Language for KNode {
    type Discriminant = OpKey;

    fn discriminant(&self) -> OpKey {
        self.op
    }

    fn matches(&self, other: &Self) -> bool {
        self.op == other.op && self.children.len() == other.children.len()
    }

    fn children(&self) -> &[Id] {
        &self.children
    }

    fn children_mut(&mut self) -> &mut [Id] {
        &mut self.children
    }
}

impl fmt::Display for KNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op{}", self.op.0)
    }
}

/// What the analysis knows about one e-class.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassData {
    /// The type of every node of the class.
    pub ty: TensorType,
    /// `Some(v)` when every element of the class's value is `v` (already rounded to the
    /// dtype): a `full`, or a view of one.
    pub konst: Option<Scalar>,
    /// The class's value depends only on params, constants and fills, with constant shapes:
    /// the scheduler computes such a value once, when the weights are loaded (the same
    /// definition as the scheduler's). True when any node of the class is.
    pub params_only: bool,
}

/// The e-class analysis: the op interning table, and types (see the module doc).
#[derive(Clone, Debug, Default)]
pub struct KilnAnalysis {
    ops: Vec<Op>,
    index: HashMap<Op, OpKey>,
}

impl KilnAnalysis {
    /// The key of `op`, interning it if it is new.
    pub fn intern(&mut self, op: Op) -> OpKey {
        if let Some(k) = self.index.get(&op) {
            return *k;
        }
        let k = OpKey(u32::try_from(self.ops.len()).expect("fewer than 2^32 distinct ops"));
        self.ops.push(op.clone());
        self.index.insert(op, k);
        k
    }

    /// The op behind `key`.
    pub fn op(&self, key: OpKey) -> &Op {
        &self.ops[key.0 as usize]
    }
}

impl egg::Analysis<KNode> for KilnAnalysis {
    type Data = ClassData;

    fn make(egraph: &mut KGraph, enode: &KNode, _id: Id) -> ClassData {
        let op = egraph.analysis.op(enode.op);
        let types: Vec<&TensorType> = enode.children.iter().map(|c| &egraph[*c].data.ty).collect();
        // Nodes come from a valid graph or from appliers that type-check before adding.
        let ty = infer_type(op, &types)
            .unwrap_or_else(|e| panic!("e-graph node {} does not type-check: {e}", op.name()));
        let konst = match op {
            Op::Full { value, dtype, .. } => round_scalar(*value, *dtype),
            Op::Reshape { .. }
            | Op::Permute { .. }
            | Op::Expand { .. }
            | Op::Slice { .. }
            | Op::Flip { .. } => egraph[enode.children[0]].data.konst,
            _ => None,
        };
        let const_shape = ty.shape.dims().iter().all(|d| d.is_const())
            && op.attribute_dims().iter().all(|d| d.is_const());
        let params_only = const_shape
            && match op {
                Op::Input { .. } | Op::State { .. } => false,
                Op::Param { .. }
                | Op::Constant { .. }
                | Op::Full { .. }
                | Op::Iota { .. }
                | Op::DimValue { .. } => true,
                _ => enode.children.iter().all(|c| egraph[*c].data.params_only),
            };
        ClassData {
            ty,
            konst,
            params_only,
        }
    }

    fn merge(&mut self, a: &mut ClassData, b: ClassData) -> DidMerge {
        if a.ty != b.ty {
            // A rewrite proved two values of different types equal: a bug in that rule.
            debug_assert!(
                false,
                "merged e-classes of different types: {} and {}",
                a.ty, b.ty
            );
            return DidMerge(false, true);
        }
        let po = match (a.params_only, b.params_only) {
            (false, true) => {
                a.params_only = true;
                DidMerge(true, false)
            }
            (true, false) => DidMerge(false, true),
            _ => DidMerge(false, false),
        };
        let k = match (a.konst, b.konst) {
            (None, Some(v)) => {
                a.konst = Some(v);
                DidMerge(true, false)
            }
            (Some(_), None) => DidMerge(false, true),
            _ => DidMerge(false, false),
        };
        k | po
    }
}

/// Evaluates `op` on rank-0 operands with the reference interpreter, so that folded values
/// are rounded exactly as the interpreter rounds them. `None` if it fails or if the result is
/// not a single scalar.
pub fn eval_scalar_op(op: Op, args: &[(Scalar, DType)]) -> Option<Scalar> {
    let mut g = Graph::new();
    let mut ids = Vec::with_capacity(args.len());
    for (v, d) in args {
        ids.push(g.full(*v, *d, Shape::scalar()).ok()?);
    }
    let out = g.push(op, ids).ok()?;
    if g.ty(out).rank() != 0 {
        return None;
    }
    g.set_output("y", out).ok()?;
    let res = kiln_ir::run(&g, &kiln_ir::Env::new()).ok()?;
    let t = res.get("y")?;
    let d = t.dtype();
    if d.is_float() {
        Some(Scalar::Float(*t.to_f64_vec().ok()?.first()?))
    } else if d.is_int() {
        Some(Scalar::Int(*t.to_i64_vec().ok()?.first()?))
    } else if d.is_bool() {
        Some(Scalar::Bool(*t.to_i64_vec().ok()?.first()? != 0))
    } else {
        None
    }
}

/// `value` rounded to `dtype` as the interpreter stores a `full` of it.
pub fn round_scalar(value: Scalar, dtype: DType) -> Option<Scalar> {
    let mut g = Graph::new();
    let id = g.full(value, dtype, Shape::scalar()).ok()?;
    g.set_output("y", id).ok()?;
    let res = kiln_ir::run(&g, &kiln_ir::Env::new()).ok()?;
    let t = res.get("y")?;
    if dtype.is_float() {
        Some(Scalar::Float(*t.to_f64_vec().ok()?.first()?))
    } else if dtype.is_int() {
        Some(Scalar::Int(*t.to_i64_vec().ok()?.first()?))
    } else {
        Some(Scalar::Bool(*t.to_i64_vec().ok()?.first()? != 0))
    }
}
