//! Convenience methods for building graphs, one per op, with NumPy broadcasting.
//!
//! Elementwise binary ops and `where` broadcast their operands here, by inserting explicit
//! `reshape` (to align ranks) and `expand` nodes; the ops themselves take identical shapes,
//! so the IR that the optimizer and backends see has no implicit broadcasting.

use crate::dim::Dim;
use crate::dtype::{DType, Scalar};
use crate::error::IrError;
use crate::graph::{Graph, NodeId};
use crate::op::{BinaryOp, Op, ReduceOp, ScatterReduce, UnaryOp};
use crate::shape::{broadcast_shapes, Shape};
use crate::tensor::Tensor;
use std::sync::Arc;

macro_rules! unary_methods {
    ($($f:ident => $op:ident),* $(,)?) => {$(
        #[doc = concat!("Elementwise `", stringify!($f), "`.")]
        pub fn $f(&mut self, x: NodeId) -> Result<NodeId, IrError> {
            self.unary(UnaryOp::$op, x)
        }
    )*};
}

macro_rules! binary_methods {
    ($($f:ident => $op:ident),* $(,)?) => {$(
        #[doc = concat!("Elementwise `", stringify!($f), "` with NumPy broadcasting.")]
        pub fn $f(&mut self, a: NodeId, b: NodeId) -> Result<NodeId, IrError> {
            self.binary(BinaryOp::$op, a, b)
        }
    )*};
}

impl Graph {
    /// A named graph input.
    pub fn input(&mut self, name: &str, dtype: DType, shape: Shape) -> Result<NodeId, IrError> {
        let name = name.to_string();
        self.push(Op::Input { name, dtype, shape }, vec![])
    }

    /// A named parameter (weight).
    pub fn param(&mut self, name: &str, dtype: DType, shape: Shape) -> Result<NodeId, IrError> {
        let name = name.to_string();
        self.push(Op::Param { name, dtype, shape }, vec![])
    }

    /// The current value of a named state.
    pub fn state(&mut self, name: &str, dtype: DType, shape: Shape) -> Result<NodeId, IrError> {
        let name = name.to_string();
        self.push(Op::State { name, dtype, shape }, vec![])
    }

    /// A tensor filled with `value`.
    pub fn full(&mut self, value: Scalar, dtype: DType, shape: Shape) -> Result<NodeId, IrError> {
        self.push(
            Op::Full {
                value,
                dtype,
                shape,
            },
            vec![],
        )
    }

    /// A rank-0 constant of `dtype` (for scalars in expressions: `x * 0.5`).
    pub fn scalar(&mut self, value: Scalar, dtype: DType) -> Result<NodeId, IrError> {
        self.full(value, dtype, Shape::scalar())
    }

    /// A dense constant.
    pub fn constant(&mut self, value: Tensor) -> Result<NodeId, IrError> {
        self.push(
            Op::Constant {
                value: Arc::new(value),
            },
            vec![],
        )
    }

    /// A rank-0 tensor holding `dim`'s run-time value; a constant dim becomes a `full`.
    pub fn dim_value(&mut self, dim: Dim, dtype: DType) -> Result<NodeId, IrError> {
        match dim.as_const() {
            Some(v) if dtype.is_int() || dtype.is_float() => {
                let value = if dtype.is_float() {
                    Scalar::Float(v as f64)
                } else {
                    Scalar::Int(v)
                };
                self.scalar(value, dtype)
            }
            _ => self.push(Op::DimValue { dim, dtype }, vec![]),
        }
    }

    /// Index along `axis`, broadcast over the other axes.
    pub fn iota(&mut self, axis: usize, dtype: DType, shape: Shape) -> Result<NodeId, IrError> {
        self.push(Op::Iota { axis, dtype, shape }, vec![])
    }

    /// `[0, 1, ..., n-1]`.
    pub fn arange(&mut self, n: impl Into<Dim>, dtype: DType) -> Result<NodeId, IrError> {
        self.iota(0, dtype, Shape(vec![n.into()]))
    }

    /// An elementwise unary op.
    pub fn unary(&mut self, op: UnaryOp, x: NodeId) -> Result<NodeId, IrError> {
        self.push(Op::Unary(op), vec![x])
    }

    unary_methods!(neg => Neg, abs => Abs, exp => Exp, log => Log, sqrt => Sqrt, rsqrt => Rsqrt,
        recip => Recip, sin => Sin, cos => Cos, tanh => Tanh, erf => Erf, floor => Floor,
        ceil => Ceil, round => Round, not => Not, sign => Sign);

    /// An elementwise binary op; the operands are broadcast to a common shape first.
    pub fn binary(&mut self, op: BinaryOp, a: NodeId, b: NodeId) -> Result<NodeId, IrError> {
        let [a, b] = self.broadcast_all(&Op::Binary(op).name(), [a, b])?;
        self.push(Op::Binary(op), vec![a, b])
    }

    binary_methods!(add => Add, sub => Sub, mul => Mul, div => Div, pow => Pow,
        maximum => Max, minimum => Min, modulo => Mod, eq => Eq, ne => Ne, lt => Lt, le => Le,
        gt => Gt, ge => Ge, and => And, or => Or, xor => Xor);

    /// `where(cond, a, b)` with broadcasting of all three.
    pub fn where_(&mut self, cond: NodeId, a: NodeId, b: NodeId) -> Result<NodeId, IrError> {
        let [c, a, b] = self.broadcast_all("where", [cond, a, b])?;
        self.push(Op::Where, vec![c, a, b])
    }

    /// Broadcasts every operand to their common NumPy shape, inserting `reshape` and `expand`
    /// only where a shape changes.
    pub fn broadcast_all<const N: usize>(
        &mut self,
        op: &str,
        ids: [NodeId; N],
    ) -> Result<[NodeId; N], IrError> {
        let mut target = Shape::scalar();
        for id in ids {
            self.check_id(op, id)?;
            target = broadcast_shapes(&target, &self.ty(id).shape).ok_or_else(|| {
                let types: Vec<_> = ids.iter().map(|i| self.ty(*i)).collect();
                IrError::shape(op, &types, "shapes that broadcast (NumPy rules)")
            })?;
        }
        let mut out = ids;
        for slot in &mut out {
            *slot = self.broadcast_to(*slot, &target)?;
        }
        Ok(out)
    }

    /// Broadcasts `x` to `shape` (NumPy rules), adding nothing if it already has that shape.
    pub fn broadcast_to(&mut self, x: NodeId, shape: &Shape) -> Result<NodeId, IrError> {
        self.check_id("expand", x)?;
        let cur = self.ty(x).shape.clone();
        if &cur == shape {
            return Ok(x);
        }
        let mut x = x;
        if cur.rank() < shape.rank() {
            let pad = shape.rank() - cur.rank();
            let dims = std::iter::repeat_n(Dim::constant(1), pad).chain(cur.0.iter().cloned());
            x = self.reshape(x, Shape(dims.collect()))?;
            if &self.ty(x).shape == shape {
                return Ok(x);
            }
        }
        self.push(
            Op::Expand {
                shape: shape.clone(),
            },
            vec![x],
        )
    }

    fn check_id(&self, op: &str, id: NodeId) -> Result<(), IrError> {
        if id.index() < self.nodes().len() {
            Ok(())
        } else {
            Err(IrError::UnknownNode {
                op: op.to_string(),
                id: id.0,
                len: self.nodes().len(),
            })
        }
    }

    /// Elementwise conversion (dequantization for a block-quantized operand).
    pub fn cast(&mut self, x: NodeId, to: DType) -> Result<NodeId, IrError> {
        self.push(Op::Cast { to }, vec![x])
    }

    /// A reduction over `axes` (sorted and deduplicated here).
    pub fn reduce(
        &mut self,
        op: ReduceOp,
        x: NodeId,
        axes: &[usize],
        keepdim: bool,
    ) -> Result<NodeId, IrError> {
        let mut axes = axes.to_vec();
        axes.sort_unstable();
        axes.dedup();
        self.push(Op::Reduce { op, axes, keepdim }, vec![x])
    }

    /// Sum over `axes`.
    pub fn sum(&mut self, x: NodeId, axes: &[usize], keepdim: bool) -> Result<NodeId, IrError> {
        self.reduce(ReduceOp::Sum, x, axes, keepdim)
    }

    /// Maximum over `axes`.
    pub fn max(&mut self, x: NodeId, axes: &[usize], keepdim: bool) -> Result<NodeId, IrError> {
        self.reduce(ReduceOp::Max, x, axes, keepdim)
    }

    /// Index of the maximum along `axis`.
    pub fn argmax(&mut self, x: NodeId, axis: usize, keepdim: bool) -> Result<NodeId, IrError> {
        self.reduce(ReduceOp::ArgMax, x, &[axis], keepdim)
    }

    /// Reshape (same element count).
    pub fn reshape(&mut self, x: NodeId, shape: Shape) -> Result<NodeId, IrError> {
        self.push(Op::Reshape { shape }, vec![x])
    }

    /// Permute axes: output axis `i` is input axis `perm[i]`.
    pub fn permute(&mut self, x: NodeId, perm: &[usize]) -> Result<NodeId, IrError> {
        self.push(
            Op::Permute {
                perm: perm.to_vec(),
            },
            vec![x],
        )
    }

    /// Broadcast to `shape`.
    pub fn expand(&mut self, x: NodeId, shape: Shape) -> Result<NodeId, IrError> {
        self.push(Op::Expand { shape }, vec![x])
    }

    /// `x[.., start:end:step, ..]` along `axis`.
    pub fn slice(
        &mut self,
        x: NodeId,
        axis: usize,
        start: impl Into<Dim>,
        end: impl Into<Dim>,
        step: i64,
    ) -> Result<NodeId, IrError> {
        let (start, end) = (start.into(), end.into());
        self.push(
            Op::Slice {
                axis,
                start,
                end,
                step,
            },
            vec![x],
        )
    }

    /// Pad every axis with `(before, after)` copies of `value`.
    pub fn pad(
        &mut self,
        x: NodeId,
        pads: Vec<(Dim, Dim)>,
        value: Scalar,
    ) -> Result<NodeId, IrError> {
        self.push(Op::Pad { pads, value }, vec![x])
    }

    /// Join along `axis`.
    pub fn concat(&mut self, xs: &[NodeId], axis: usize) -> Result<NodeId, IrError> {
        self.push(Op::Concat { axis }, xs.to_vec())
    }

    /// Reverse along `axes`.
    pub fn flip(&mut self, x: NodeId, axes: &[usize]) -> Result<NodeId, IrError> {
        let mut axes = axes.to_vec();
        axes.sort_unstable();
        axes.dedup();
        self.push(Op::Flip { axes }, vec![x])
    }

    /// Select entries along `axis` by rank-1 integer indices.
    pub fn index_select(&mut self, x: NodeId, axis: usize, idx: NodeId) -> Result<NodeId, IrError> {
        self.push(Op::IndexSelect { axis }, vec![x, idx])
    }

    /// `torch.gather(x, axis, idx)`.
    pub fn gather(&mut self, x: NodeId, axis: usize, idx: NodeId) -> Result<NodeId, IrError> {
        self.push(Op::Gather { axis }, vec![x, idx])
    }

    /// `torch.scatter(dst, axis, idx, src)` (or `scatter_add` with [`ScatterReduce::Add`]).
    pub fn scatter(
        &mut self,
        dst: NodeId,
        axis: usize,
        idx: NodeId,
        src: NodeId,
        reduce: ScatterReduce,
    ) -> Result<NodeId, IrError> {
        self.push(Op::Scatter { axis, reduce }, vec![dst, idx, src])
    }

    /// `dst` with `src` written at `start` along `axis`.
    pub fn slice_update(
        &mut self,
        dst: NodeId,
        src: NodeId,
        axis: usize,
        start: impl Into<Dim>,
    ) -> Result<NodeId, IrError> {
        let start = start.into();
        self.push(Op::SliceUpdate { axis, start }, vec![dst, src])
    }

    /// `a @ b` (batched, broadcasting leading axes).
    pub fn matmul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId, IrError> {
        self.matmul_t(a, b, false, false)
    }

    /// `op(a) @ op(b)` where `op` swaps the last two axes when the flag is set.
    pub fn matmul_t(
        &mut self,
        a: NodeId,
        b: NodeId,
        trans_a: bool,
        trans_b: bool,
    ) -> Result<NodeId, IrError> {
        self.push(Op::MatMul { trans_a, trans_b }, vec![a, b])
    }
}
