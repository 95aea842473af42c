//! Errors of evaluation.

use crate::dim::{Bindings, DimError};
use crate::dtype::DType;
use crate::graph::NodeId;
use crate::quant::QuantError;
use crate::shape::Shape;

/// Why a graph could not be evaluated.
///
/// Every variant names the node (`%N`) and its op (`input`, `gather`, `reduce.max`, ...);
/// data-dependent errors name the offending value and the bound it broke.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// An input, param or state that the outputs need was not given.
    #[error("{node} ({op}): no tensor given for {op} `{name}`")]
    Missing {
        /// The source node.
        node: NodeId,
        /// `input`, `param` or `state`.
        op: String,
        /// Its name.
        name: String,
    },
    /// A given input, param or state has the wrong dtype.
    #[error("{node} ({op}): {op} `{name}` has dtype {actual}, the graph expects {expected}")]
    DType {
        /// The source node.
        node: NodeId,
        /// `input`, `param` or `state`.
        op: String,
        /// Its name.
        name: String,
        /// The graph's dtype.
        expected: DType,
        /// The given tensor's dtype.
        actual: DType,
    },
    /// A given input, param or state does not have the graph's shape under the bindings
    /// (wrong rank, or a dim that differs from its symbolic dim's value).
    #[error(
        "{node} ({op}): {op} `{name}` has shape {actual:?}, the graph expects {expected} with {}",
        fmt_bindings(.bindings)
    )]
    Shape {
        /// The source node.
        node: NodeId,
        /// `input`, `param` or `state`.
        op: String,
        /// Its name.
        name: String,
        /// The graph's (symbolic) shape.
        expected: Shape,
        /// The bindings in force (given and inferred so far).
        bindings: Bindings,
        /// The given tensor's shape.
        actual: Vec<usize>,
    },
    /// A dim could not be evaluated (unbound symbol, division by zero, overflow).
    #[error("{node} ({op}): {source}")]
    Dim {
        /// The node.
        node: NodeId,
        /// Its op.
        op: String,
        /// What went wrong.
        source: DimError,
    },
    /// A dim (of a shape or a padding) evaluated to a negative value.
    #[error("{node} ({op}): {what} `{dim}` is {value} with {}, must not be negative", fmt_bindings(.bindings))]
    NegativeDim {
        /// The node.
        node: NodeId,
        /// Its op.
        op: String,
        /// Which dim (`dim 1 of the result`, `padding before axis 0`).
        what: String,
        /// The symbolic expression.
        dim: String,
        /// Its value.
        value: i64,
        /// The bindings in force.
        bindings: Bindings,
    },
    /// A result with more elements than [`super::Env::max_elements`] allows.
    #[error(
        "{node} ({op}): result shape {shape:?} has {elements} elements, over the limit of {limit}"
    )]
    TooLarge {
        /// The node.
        node: NodeId,
        /// Its op.
        op: String,
        /// The result's shape.
        shape: Vec<i64>,
        /// Its element count.
        elements: u128,
        /// The limit.
        limit: usize,
    },
    /// An index (of `index_select`, `gather` or `scatter`) outside `0..size`.
    #[error("{node} ({op}): index {index} is out of bounds for axis {axis} of size {size}")]
    IndexOutOfBounds {
        /// The node.
        node: NodeId,
        /// Its op.
        op: String,
        /// The bad index.
        index: i64,
        /// The indexed axis.
        axis: usize,
        /// Its size.
        size: usize,
    },
    /// A `slice` or `slice_update` range that breaks `0 <= start <= end <= size` once the
    /// symbols are bound.
    #[error("{node} ({op}): range {start}..{end} on axis {axis} of size {size} breaks 0 <= start <= end <= size")]
    Bounds {
        /// The node.
        node: NodeId,
        /// Its op.
        op: String,
        /// The axis.
        axis: usize,
        /// First index.
        start: i64,
        /// End index (exclusive; `start + len` for `slice_update`).
        end: i64,
        /// The axis size.
        size: usize,
    },
    /// `max`, `min` or `argmax` of an empty set of elements.
    #[error("{node} ({op}): reduced axis {axis} has size 0, and {op} of no elements is undefined")]
    EmptyReduction {
        /// The node.
        node: NodeId,
        /// Its op.
        op: String,
        /// The empty reduced axis.
        axis: usize,
    },
    /// Operand shapes that pass the symbolic checks but not their concrete ones (`gather` or
    /// `scatter` indices larger than the operand on an axis other than the indexed one).
    #[error("{node} ({op}): operand shapes {shapes:?} do not fit: expected {expected}")]
    OperandShape {
        /// The node.
        node: NodeId,
        /// Its op.
        op: String,
        /// The operands' concrete shapes.
        shapes: Vec<Vec<usize>>,
        /// What the op needs.
        expected: String,
    },
    /// Dequantizing a block-quantized operand failed.
    #[error("{node} ({op}): {source}")]
    Quant {
        /// The node.
        node: NodeId,
        /// Its op.
        op: String,
        /// What went wrong.
        source: QuantError,
    },
    /// A node id that is not in the graph (passed to [`super::run_nodes`]).
    #[error("{node}: not a node of this graph (it has {len} nodes)")]
    UnknownNode {
        /// The bad id.
        node: NodeId,
        /// Number of nodes in the graph.
        len: usize,
    },
    /// An interpreter invariant broke (a bug in the interpreter, never the user's fault).
    #[error("{node} ({op}): internal interpreter error: {message}")]
    Internal {
        /// The node.
        node: NodeId,
        /// Its op.
        op: String,
        /// What broke.
        message: String,
    },
}

/// `{seq=3, past=0}`.
pub(crate) fn fmt_bindings(b: &Bindings) -> String {
    let parts: Vec<String> = b.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", parts.join(", "))
}

/// The node being evaluated, for building errors.
#[derive(Clone, Debug)]
pub(crate) struct Ctx {
    pub node: NodeId,
    pub op: String,
}

impl Ctx {
    pub fn internal(&self, message: impl Into<String>) -> EvalError {
        EvalError::Internal {
            node: self.node,
            op: self.op.clone(),
            message: message.into(),
        }
    }

    pub fn dim(&self, source: DimError) -> EvalError {
        EvalError::Dim {
            node: self.node,
            op: self.op.clone(),
            source,
        }
    }

    pub fn out_of_bounds(&self, index: i64, axis: usize, size: usize) -> EvalError {
        EvalError::IndexOutOfBounds {
            node: self.node,
            op: self.op.clone(),
            index,
            axis,
            size,
        }
    }

    pub fn operand_shape(&self, shapes: &[&[usize]], expected: impl Into<String>) -> EvalError {
        EvalError::OperandShape {
            node: self.node,
            op: self.op.clone(),
            shapes: shapes.iter().map(|s| s.to_vec()).collect(),
            expected: expected.into(),
        }
    }
}
