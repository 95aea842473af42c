//! The op set: a small set of primitives that every model is written in.
//!
//! Softmax, norms, attention, RoPE and GELU are not ops: they are compositions built by the nn
//! library, so the optimizer sees through them. See `docs/ir.md` for each op's semantics.

use crate::dim::Dim;
use crate::dtype::{DType, Scalar};
use crate::shape::Shape;
use crate::tensor::Tensor;
use std::sync::Arc;

/// One operation of the IR. Attributes live in the op; operands are the node's inputs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// A named graph input, given at run time (token ids, activations, masks).
    Input {
        /// Name, unique among inputs.
        name: String,
        /// Element type.
        dtype: DType,
        /// Shape (usually symbolic).
        shape: Shape,
    },
    /// A named weight, bound when the model is loaded (PyTorch `state_dict` key).
    Param {
        /// Name, unique among parameters.
        name: String,
        /// Element type (may be block-quantized).
        dtype: DType,
        /// Shape.
        shape: Shape,
    },
    /// The current value of a named piece of persistent state (a KV cache). Its next value is
    /// set by [`crate::Graph::set_state_update`].
    State {
        /// Name, unique among states.
        name: String,
        /// Element type.
        dtype: DType,
        /// Shape.
        shape: Shape,
    },
    /// A tensor of the given shape with every element equal to `value`.
    Full {
        /// The fill value.
        value: Scalar,
        /// Element type.
        dtype: DType,
        /// Shape (may be symbolic).
        shape: Shape,
    },
    /// A dense constant with a concrete shape.
    Constant {
        /// The value.
        value: Arc<Tensor>,
    },
    /// A rank-0 tensor holding the run-time value of a symbolic dim (`past`, `seq`), e.g. the
    /// position offset of a decode step or the divisor of a mean over a symbolic axis.
    DimValue {
        /// The dim.
        dim: Dim,
        /// Element type (integer or float).
        dtype: DType,
    },
    /// Element `[i0, i1, ...]` equals `i_axis` (an arange along `axis`, broadcast over the rest).
    Iota {
        /// The axis whose index is the value.
        axis: usize,
        /// Element type (integer or float).
        dtype: DType,
        /// Shape.
        shape: Shape,
    },
    /// An elementwise function of one operand.
    Unary(UnaryOp),
    /// An elementwise function of two operands of identical shape and dtype.
    Binary(BinaryOp),
    /// `where(cond, a, b)`: `a` where the bool `cond` is true, else `b`; identical shapes.
    Where,
    /// Elementwise conversion to `to` (a block-quantized operand is dequantized).
    Cast {
        /// Target dtype (never block-quantized).
        to: DType,
    },
    /// A reduction over `axes`.
    Reduce {
        /// Which reduction.
        op: ReduceOp,
        /// Reduced axes, sorted, no duplicates (exactly one for argmax).
        axes: Vec<usize>,
        /// Keep reduced axes as size 1.
        keepdim: bool,
    },
    /// Same elements in row-major order, new shape with the same element count.
    Reshape {
        /// The new shape.
        shape: Shape,
    },
    /// Output axis `i` is input axis `perm[i]`.
    Permute {
        /// A permutation of `0..rank`.
        perm: Vec<usize>,
    },
    /// Broadcast to `shape` (NumPy rules: input aligned right, size-1 axes stretch, new
    /// leading axes allowed).
    Expand {
        /// The target shape.
        shape: Shape,
    },
    /// Elements `start, start + step, ...` below `end` along `axis`.
    Slice {
        /// The sliced axis.
        axis: usize,
        /// First index (inclusive).
        start: Dim,
        /// End index (exclusive); `start <= end <= size` is checked when values are known.
        end: Dim,
        /// Step, at least 1.
        step: i64,
    },
    /// Pads every axis with `before` and `after` copies of `value`.
    Pad {
        /// `(before, after)` per axis, non-negative.
        pads: Vec<(Dim, Dim)>,
        /// The fill value.
        value: Scalar,
    },
    /// Joins one or more operands along `axis`; the other dims must agree.
    Concat {
        /// The joined axis.
        axis: usize,
    },
    /// Reverses the order of elements along `axes`.
    Flip {
        /// Reversed axes, sorted, no duplicates.
        axes: Vec<usize>,
    },
    /// `index_select(x, axis, idx)`: picks entries of `x` along `axis` by the integer indices
    /// in the rank-1 `idx`; that axis gets `idx`'s length (an embedding lookup).
    IndexSelect {
        /// The indexed axis.
        axis: usize,
    },
    /// `gather(x, axis, idx)` as in PyTorch: `out[..i..] = x[..idx[..i..]..]` with `idx` of the
    /// same rank as `x`; the output has `idx`'s shape.
    Gather {
        /// The indexed axis.
        axis: usize,
    },
    /// `scatter(dst, axis, idx, src)` as in PyTorch: `dst[..idx[..i..]..] (=|+=) src[..i..]`,
    /// `idx` and `src` of the same shape; the output has `dst`'s shape.
    Scatter {
        /// The indexed axis.
        axis: usize,
        /// Assign or accumulate.
        reduce: ScatterReduce,
    },
    /// `dst` with `dst[.., start .. start + len(src), ..] = src` along `axis` (a KV-cache
    /// write at a symbolic offset). The output has `dst`'s shape.
    SliceUpdate {
        /// The updated axis.
        axis: usize,
        /// Offset of the first updated index.
        start: Dim,
    },
    /// Batched matrix product with broadcasting over leading axes:
    /// `op(a)[.., m, k] @ op(b)[.., k, n]`, where `op` transposes the last two axes when the
    /// flag is set. A block-quantized operand must hold its blocks along `k`: `b` with
    /// `trans_b` (stored `[.., n, k]`, a `Linear` weight) or `a` without `trans_a`.
    MatMul {
        /// Use `a`'s last two axes swapped.
        trans_a: bool,
        /// Use `b`'s last two axes swapped.
        trans_b: bool,
    },
}

/// Elementwise functions of one operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnaryOp {
    /// `-x` (signed and float types).
    Neg,
    /// `|x|`.
    Abs,
    /// `e^x` (float).
    Exp,
    /// Natural logarithm (float).
    Log,
    /// Square root (float).
    Sqrt,
    /// `1 / sqrt(x)` (float).
    Rsqrt,
    /// `1 / x` (float).
    Recip,
    /// Sine (float).
    Sin,
    /// Cosine (float).
    Cos,
    /// Hyperbolic tangent (float).
    Tanh,
    /// Error function (float).
    Erf,
    /// Round toward negative infinity (float).
    Floor,
    /// Round toward positive infinity (float).
    Ceil,
    /// Round to nearest, ties to even, as `torch.round` (float).
    Round,
    /// Logical not (bool) or bitwise not (integers).
    Not,
    /// -1, 0 or 1 (NaN stays NaN).
    Sign,
}

/// Elementwise functions of two operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BinaryOp {
    /// `a + b` (integers wrap).
    Add,
    /// `a - b` (integers wrap).
    Sub,
    /// `a * b` (integers wrap).
    Mul,
    /// `a / b`; integers use floor division, and `x / 0 == 0` as in NumPy.
    Div,
    /// `a ^ b` (float).
    Pow,
    /// Larger of the two; NaN if either is NaN.
    Max,
    /// Smaller of the two; NaN if either is NaN.
    Min,
    /// Floor modulo, sign of `b` (`torch.remainder`); integer `x % 0 == 0`.
    Mod,
    /// `a == b` (bool result).
    Eq,
    /// `a != b` (bool result).
    Ne,
    /// `a < b` (bool result).
    Lt,
    /// `a <= b` (bool result).
    Le,
    /// `a > b` (bool result).
    Gt,
    /// `a >= b` (bool result).
    Ge,
    /// Logical (bool) or bitwise (integers) and.
    And,
    /// Logical (bool) or bitwise (integers) or.
    Or,
    /// Logical (bool) or bitwise (integers) exclusive or.
    Xor,
}

/// Reductions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReduceOp {
    /// Sum (floats accumulate in f64).
    Sum,
    /// Maximum (NaN propagates).
    Max,
    /// Minimum (NaN propagates).
    Min,
    /// Product.
    Prod,
    /// Index of the first maximum along one axis, as i64 (NaN counts as the maximum).
    ArgMax,
}

/// How [`Op::Scatter`] combines values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScatterReduce {
    /// Overwrite (`scatter`); with duplicate indices the last write wins.
    Assign,
    /// Accumulate (`scatter_add`).
    Add,
}

impl UnaryOp {
    /// Every unary op.
    pub const ALL: [UnaryOp; 16] = [
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Recip,
        UnaryOp::Sin,
        UnaryOp::Cos,
        UnaryOp::Tanh,
        UnaryOp::Erf,
        UnaryOp::Floor,
        UnaryOp::Ceil,
        UnaryOp::Round,
        UnaryOp::Not,
        UnaryOp::Sign,
    ];

    /// Name in the text format.
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Abs => "abs",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Recip => "recip",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Erf => "erf",
            UnaryOp::Floor => "floor",
            UnaryOp::Ceil => "ceil",
            UnaryOp::Round => "round",
            UnaryOp::Not => "not",
            UnaryOp::Sign => "sign",
        }
    }

    /// True for ops defined only on floats.
    pub fn float_only(self) -> bool {
        !matches!(
            self,
            UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Not | UnaryOp::Sign
        )
    }
}

impl BinaryOp {
    /// Every binary op.
    pub const ALL: [BinaryOp; 17] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Pow,
        BinaryOp::Max,
        BinaryOp::Min,
        BinaryOp::Mod,
        BinaryOp::Eq,
        BinaryOp::Ne,
        BinaryOp::Lt,
        BinaryOp::Le,
        BinaryOp::Gt,
        BinaryOp::Ge,
        BinaryOp::And,
        BinaryOp::Or,
        BinaryOp::Xor,
    ];

    /// Name in the text format.
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Pow => "pow",
            BinaryOp::Max => "max",
            BinaryOp::Min => "min",
            BinaryOp::Mod => "mod",
            BinaryOp::Eq => "eq",
            BinaryOp::Ne => "ne",
            BinaryOp::Lt => "lt",
            BinaryOp::Le => "le",
            BinaryOp::Gt => "gt",
            BinaryOp::Ge => "ge",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
            BinaryOp::Xor => "xor",
        }
    }

    /// True for comparisons, whose result is bool.
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge
        )
    }

    /// True for and/or/xor, defined on bool and integers only.
    pub fn is_logical(self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or | BinaryOp::Xor)
    }
}

impl ReduceOp {
    /// Every reduction.
    pub const ALL: [ReduceOp; 5] = [
        ReduceOp::Sum,
        ReduceOp::Max,
        ReduceOp::Min,
        ReduceOp::Prod,
        ReduceOp::ArgMax,
    ];

    /// Name in the text format.
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
            ReduceOp::Prod => "prod",
            ReduceOp::ArgMax => "argmax",
        }
    }
}

impl ScatterReduce {
    /// Name in the text format.
    pub fn name(self) -> &'static str {
        match self {
            ScatterReduce::Assign => "assign",
            ScatterReduce::Add => "add",
        }
    }
}

impl Op {
    /// The op's name in the text format and in error messages (`add`, `reduce.sum`, `matmul`).
    pub fn name(&self) -> String {
        match self {
            Op::Input { .. } => "input".into(),
            Op::Param { .. } => "param".into(),
            Op::State { .. } => "state".into(),
            Op::Full { .. } => "full".into(),
            Op::Constant { .. } => "constant".into(),
            Op::DimValue { .. } => "dim_value".into(),
            Op::Iota { .. } => "iota".into(),
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

    /// True for ops without operands.
    pub fn is_source(&self) -> bool {
        matches!(
            self,
            Op::Input { .. }
                | Op::Param { .. }
                | Op::State { .. }
                | Op::Full { .. }
                | Op::Constant { .. }
                | Op::DimValue { .. }
                | Op::Iota { .. }
        )
    }
}

impl Op {
    /// Every symbolic dim in the op's attributes (shapes, slice bounds, pads, offsets).
    pub fn attribute_dims(&self) -> Vec<&Dim> {
        match self {
            Op::Input { shape, .. }
            | Op::Param { shape, .. }
            | Op::State { shape, .. }
            | Op::Full { shape, .. }
            | Op::Iota { shape, .. }
            | Op::Reshape { shape }
            | Op::Expand { shape } => shape.dims().iter().collect(),
            Op::Slice { start, end, .. } => vec![start, end],
            Op::Pad { pads, .. } => pads.iter().flat_map(|(a, b)| [a, b]).collect(),
            Op::SliceUpdate { start, .. } => vec![start],
            Op::DimValue { dim, .. } => vec![dim],
            _ => Vec::new(),
        }
    }
}
