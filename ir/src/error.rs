//! Errors of graph construction.

use crate::shape::TensorType;

/// Why an op could not be added to a graph (or a graph could not be completed).
///
/// Every variant names the op; shape and dtype errors list the operands' types with their
/// symbols, and say what was expected.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum IrError {
    /// Wrong number of operands.
    #[error("{op}: expected {expected} operand(s), got {got}")]
    Arity {
        /// The op.
        op: String,
        /// How many it takes (`2`, `at least 1`).
        expected: String,
        /// How many it was given.
        got: usize,
    },
    /// An operand id that is not a node of this graph.
    #[error("{op}: operand %{id} is not a node of this graph (it has {len} nodes)")]
    UnknownNode {
        /// The op.
        op: String,
        /// The bad id.
        id: u32,
        /// Number of nodes in the graph.
        len: usize,
    },
    /// Operand shapes that do not fit the op.
    #[error("{op}: operand types {} do not fit: expected {expected}", list(.operands))]
    Shape {
        /// The op.
        op: String,
        /// The operands' types (dtype and shape, with symbols).
        operands: Vec<TensorType>,
        /// What the op needs.
        expected: String,
    },
    /// Operand dtypes that do not fit the op.
    #[error("{op}: operand types {} do not fit: expected {expected}", list(.operands))]
    DType {
        /// The op.
        op: String,
        /// The operands' types.
        operands: Vec<TensorType>,
        /// What the op needs.
        expected: String,
    },
    /// An axis outside `0..rank`.
    #[error("{op}: axis {axis} is out of range for rank {rank} (operand {operand})")]
    Axis {
        /// The op.
        op: String,
        /// The bad axis.
        axis: usize,
        /// The operand's rank.
        rank: usize,
        /// The operand's type.
        operand: TensorType,
    },
    /// An attribute that is invalid on its own or for the operands.
    #[error("{op}: {message}")]
    Attribute {
        /// The op.
        op: String,
        /// What is wrong.
        message: String,
    },
    /// A name used twice among inputs, params, states or outputs.
    #[error("duplicate {kind} name `{name}`")]
    Duplicate {
        /// `input`, `param`, `state` or `output`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A state update for a state the graph does not read.
    #[error("no state named `{name}` in this graph")]
    UnknownState {
        /// The name.
        name: String,
    },
    /// A state update whose type differs from the state's.
    #[error("state `{name}` has type {expected} but its update has type {actual}")]
    StateType {
        /// The state's name.
        name: String,
        /// The state's type.
        expected: TensorType,
        /// The update's type.
        actual: TensorType,
    },
}

fn list(types: &[TensorType]) -> String {
    let parts: Vec<String> = types.iter().map(ToString::to_string).collect();
    parts.join(", ")
}

impl IrError {
    pub(crate) fn shape(op: &str, operands: &[&TensorType], expected: impl Into<String>) -> Self {
        IrError::Shape {
            op: op.to_string(),
            operands: operands.iter().map(|t| (*t).clone()).collect(),
            expected: expected.into(),
        }
    }

    pub(crate) fn dtype(op: &str, operands: &[&TensorType], expected: impl Into<String>) -> Self {
        IrError::DType {
            op: op.to_string(),
            operands: operands.iter().map(|t| (*t).clone()).collect(),
            expected: expected.into(),
        }
    }

    pub(crate) fn attr(op: &str, message: impl Into<String>) -> Self {
        IrError::Attribute {
            op: op.to_string(),
            message: message.into(),
        }
    }
}
