//! The cost model used by extraction: bytes moved plus flops, evaluated at representative
//! symbol values.
//!
//! Each node costs `node_overhead + bytes_weight * bytes + flop_weight * flops`, where sizes
//! come from the node's (symbolic) type with every symbol set to
//! [`CostModel::default_symbol_value`] (512) unless [`CostModel::symbol_values`] says
//! otherwise. Bytes are the operands read plus the result written; views (`reshape`,
//! `permute`, `expand`, `slice`) move no bytes, as they can stay views of their operand;
//! `full`, `iota` and `dim_value` are generated where they are used and move nothing;
//! inputs, params and states are already in memory. The per-node overhead (a kernel launch,
//! at least) makes every extra node cost something, so extraction drops redundant views and
//! never picks a cyclic term. Everything is plain `f64` arithmetic on the node's own data,
//! so costs (and extraction) are deterministic.
//!
//! Two adjustments in the e-graph cost function ([`EggCost`]):
//!
//! - *Load-time work is (almost) free.* A node whose operands are all params-only classes
//!   (see [`crate::egraph::lang::ClassData::params_only`]), such as a `concat` of weights,
//!   computes a params-only value, which the scheduler computes once when the weights are
//!   loaded; its own cost is scaled by [`CostModel::load_time_weight`] (1/1000). It stays
//!   positive, so such a node still costs more than nothing.
//! - *A slice of a merged product pays its share.* Extraction sums tree costs, so a value
//!   shared by `m` users is charged `m` times, which would never let the merged form of
//!   [`crate::egraph::rules::merge`] win (`m` slices of one product, each charged the whole
//!   product). A step-1 `slice` of a class holding a `matmul` whose `b` is a params-only
//!   `concat` is charged the sliced fraction (`(end - start) / size` of its axis) of that
//!   operand's cost: the slices of one merged product together pay for it once. Each slice
//!   then costs its own rows' share of the product, plus `1/m`-ish of reading `a` and of
//!   computing `a`, against a full read of `a` (and a full tree cost of `a`) for a separate
//!   product, so the merged form wins whenever the products share a nontrivial input.

use super::lang::{KGraph, KNode};
use kiln_ir::{infer_type, Bindings, DType, Dim, Op, TensorType};
use std::collections::BTreeMap;

/// Cost model parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct CostModel {
    /// Value of every symbol not in `symbol_values`.
    pub default_symbol_value: i64,
    /// Values of particular symbols (`seq`, `batch`, ...).
    pub symbol_values: BTreeMap<String, i64>,
    /// Cost of one byte read or written.
    pub byte_weight: f64,
    /// Cost of one arithmetic operation.
    pub flop_weight: f64,
    /// Cost of every node, whatever its size.
    pub node_overhead: f64,
    /// Factor on the cost of a node computing a params-only value from params-only operands
    /// (load-time work, run once when the weights are loaded).
    pub load_time_weight: f64,
}

impl Default for CostModel {
    fn default() -> CostModel {
        CostModel {
            default_symbol_value: 512,
            symbol_values: BTreeMap::new(),
            byte_weight: 1.0,
            flop_weight: 1.0,
            node_overhead: 1.0,
            load_time_weight: 1e-3,
        }
    }
}

impl CostModel {
    /// The value of `d` at the representative symbol values (negative results count as 0).
    pub fn dim(&self, d: &Dim) -> f64 {
        if let Some(c) = d.as_const() {
            return c.max(0) as f64;
        }
        let mut b = Bindings::new();
        for s in d.symbols() {
            let v = self
                .symbol_values
                .get(&s)
                .copied()
                .unwrap_or(self.default_symbol_value);
            b.set(&s, v);
        }
        d.eval(&b)
            .map_or(self.default_symbol_value as f64, |v| v.max(0) as f64)
    }

    /// Number of elements of a type.
    pub fn numel(&self, ty: &TensorType) -> f64 {
        ty.shape.dims().iter().map(|d| self.dim(d)).product()
    }

    /// Bytes of a value of that type.
    pub fn bytes(&self, ty: &TensorType) -> f64 {
        let n = self.numel(ty);
        match ty.dtype {
            DType::Quant(q) => n * q.block_bytes() as f64 / q.block_size() as f64,
            d => n * d.size_bytes().unwrap_or(1) as f64,
        }
    }

    /// The cost of one node with operand types `ins` and result type `out`.
    pub fn node_cost(&self, op: &Op, ins: &[&TensorType], out: &TensorType) -> f64 {
        let io = || ins.iter().map(|t| self.bytes(t)).sum::<f64>() + self.bytes(out);
        let (bytes, flops) = match op {
            Op::Input { .. }
            | Op::Param { .. }
            | Op::State { .. }
            | Op::Full { .. }
            | Op::Iota { .. }
            | Op::DimValue { .. } => (0.0, 0.0),
            Op::Constant { .. } => (self.bytes(out), 0.0),
            Op::Reshape { .. } | Op::Permute { .. } | Op::Expand { .. } | Op::Slice { .. } => {
                (0.0, 0.0)
            }
            Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast { .. } => (io(), self.numel(out)),
            Op::Reduce { .. } => (io(), ins.first().map_or(0.0, |t| self.numel(t))),
            Op::MatMul { trans_a, .. } => {
                let a = ins[0];
                let r = a.rank();
                let k = if *trans_a {
                    &a.shape[r - 2]
                } else {
                    &a.shape[r - 1]
                };
                (io(), 2.0 * self.numel(out) * self.dim(k))
            }
            _ => (io(), 0.0),
        };
        self.node_overhead + self.byte_weight * bytes + self.flop_weight * flops
    }
}

/// The cost model as an egg cost function over an e-graph (tree cost: a node's cost plus its
/// operands').
pub struct EggCost<'a> {
    /// The model.
    pub model: &'a CostModel,
    /// The e-graph whose types are used.
    pub egraph: &'a KGraph,
}

impl EggCost<'_> {
    /// Class `x` holds a `matmul` whose `b` is a params-only `concat` (a merged product).
    fn is_merged_product(&self, x: egg::Id) -> bool {
        let eg = self.egraph;
        eg[x].iter().any(|n| {
            matches!(eg.analysis.op(n.op), Op::MatMul { .. })
                && eg[n.children[1]].data.params_only
                && eg[n.children[1]]
                    .iter()
                    .any(|m| matches!(eg.analysis.op(m.op), Op::Concat { .. }))
        })
    }
}

impl egg::CostFunction<KNode> for EggCost<'_> {
    type Cost = f64;

    fn cost<C>(&mut self, enode: &KNode, mut costs: C) -> f64
    where
        C: FnMut(egg::Id) -> f64,
    {
        let op = self.egraph.analysis.op(enode.op);
        let ins: Vec<&TensorType> = enode
            .children
            .iter()
            .map(|c| &self.egraph[*c].data.ty)
            .collect();
        let eg = self.egraph;
        let own = match infer_type(op, &ins) {
            Ok(out) => {
                let c = self.model.node_cost(op, &ins, &out);
                // Load-time work: params-only operands, constant shapes (as in the analysis).
                let load_time = !op.is_source()
                    && enode.children.iter().all(|c| eg[*c].data.params_only)
                    && out.shape.dims().iter().all(|d| d.is_const())
                    && op.attribute_dims().iter().all(|d| d.is_const());
                if load_time {
                    c * self.model.load_time_weight
                } else {
                    c
                }
            }
            Err(_) => f64::INFINITY,
        };
        if let Op::Slice {
            axis,
            start,
            end,
            step: 1,
        } = op
        {
            let x = enode.children[0];
            if self.is_merged_product(x) {
                let size = self.model.dim(&eg[x].data.ty.shape[*axis]);
                let len = (self.model.dim(end) - self.model.dim(start)).max(0.0);
                let share = if size > 0.0 {
                    (len / size).min(1.0)
                } else {
                    1.0
                };
                return own + share * costs(x);
            }
        }
        enode.children.iter().fold(own, |acc, c| acc + costs(*c))
    }
}
