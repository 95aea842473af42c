//! The graph: a list of typed nodes in topological order, named outputs and state updates.

use crate::error::IrError;
use crate::infer::infer;
use crate::op::Op;
use crate::shape::TensorType;
use std::fmt;

/// A node's index in its graph. Printed as `%N`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    /// The index into [`Graph::nodes`].
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One node: an op, its operands (earlier nodes) and its inferred type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The operation.
    pub op: Op,
    /// Operands, in the op's order.
    pub inputs: Vec<NodeId>,
    /// The result type, inferred when the node was added.
    pub ty: TensorType,
}

/// A tensor program. Nodes are only ever appended, each after its operands, so the node list
/// is a topological order and a graph is acyclic by construction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Graph {
    nodes: Vec<Node>,
    outputs: Vec<(String, NodeId)>,
    state_updates: Vec<(String, NodeId)>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Adds a node after checking its operands and inferring its type. This is the one way
    /// nodes enter a graph; the builder methods ([`Graph::add`], [`Graph::matmul`], ...) and
    /// the text parser all end here.
    pub fn push(&mut self, op: Op, inputs: Vec<NodeId>) -> Result<NodeId, IrError> {
        let mut types = Vec::with_capacity(inputs.len());
        for id in &inputs {
            let node = self.nodes.get(id.index()).ok_or(IrError::UnknownNode {
                op: op.name(),
                id: id.0,
                len: self.nodes.len(),
            })?;
            types.push(&node.ty);
        }
        let ty = infer(&op, &types)?;
        self.check_unique_source(&op)?;
        let id = NodeId(
            u32::try_from(self.nodes.len())
                .map_err(|_| IrError::attr(&op.name(), "graph has more than 2^32 nodes"))?,
        );
        self.nodes.push(Node { op, inputs, ty });
        Ok(id)
    }

    fn check_unique_source(&self, op: &Op) -> Result<(), IrError> {
        let (kind, name) = match op {
            Op::Input { name, .. } => ("input", name),
            Op::Param { name, .. } => ("param", name),
            Op::State { name, .. } => ("state", name),
            _ => return Ok(()),
        };
        let clash = self.nodes.iter().any(|n| match (&n.op, kind) {
            (Op::Input { name: m, .. }, "input")
            | (Op::Param { name: m, .. }, "param")
            | (Op::State { name: m, .. }, "state") => m == name,
            _ => false,
        });
        if clash {
            return Err(IrError::Duplicate {
                kind,
                name: name.clone(),
            });
        }
        Ok(())
    }

    /// Marks `id` as the output called `name`.
    pub fn set_output(&mut self, name: &str, id: NodeId) -> Result<(), IrError> {
        self.check_node("output", id)?;
        if self.outputs.iter().any(|(n, _)| n == name) {
            return Err(IrError::Duplicate {
                kind: "output",
                name: name.to_string(),
            });
        }
        self.outputs.push((name.to_string(), id));
        Ok(())
    }

    /// Sets the next value of the state called `name` (read by an [`Op::State`] node) to `id`.
    pub fn set_state_update(&mut self, name: &str, id: NodeId) -> Result<(), IrError> {
        self.check_node("state update", id)?;
        let state = self
            .nodes
            .iter()
            .find(|n| matches!(&n.op, Op::State { name: m, .. } if m == name))
            .ok_or_else(|| IrError::UnknownState {
                name: name.to_string(),
            })?;
        let actual = &self.nodes[id.index()].ty;
        if *actual != state.ty {
            return Err(IrError::StateType {
                name: name.to_string(),
                expected: state.ty.clone(),
                actual: actual.clone(),
            });
        }
        if self.state_updates.iter().any(|(n, _)| n == name) {
            return Err(IrError::Duplicate {
                kind: "state update",
                name: name.to_string(),
            });
        }
        self.state_updates.push((name.to_string(), id));
        Ok(())
    }

    fn check_node(&self, what: &str, id: NodeId) -> Result<(), IrError> {
        if id.index() < self.nodes.len() {
            Ok(())
        } else {
            Err(IrError::UnknownNode {
                op: what.to_string(),
                id: id.0,
                len: self.nodes.len(),
            })
        }
    }

    /// All nodes, in topological order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// One node. Panics if `id` is not from this graph (ids are only made by this graph).
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    /// A node's type.
    pub fn ty(&self, id: NodeId) -> &TensorType {
        &self.nodes[id.index()].ty
    }

    /// Named outputs, in the order they were set.
    pub fn outputs(&self) -> &[(String, NodeId)] {
        &self.outputs
    }

    /// State updates, in the order they were set.
    pub fn state_updates(&self) -> &[(String, NodeId)] {
        &self.state_updates
    }

    /// The node of every output, then of every state update: what evaluating the graph
    /// must produce (a node may appear more than once).
    pub fn result_nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.outputs
            .iter()
            .chain(&self.state_updates)
            .map(|(_, id)| *id)
    }

    /// The output called `name`.
    pub fn output(&self, name: &str) -> Option<NodeId> {
        self.outputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| *id)
    }

    /// Inputs as `(name, node)`, in node order.
    pub fn inputs(&self) -> Vec<(&str, NodeId)> {
        self.sources(|op| match op {
            Op::Input { name, .. } => Some(name),
            _ => None,
        })
    }

    /// Parameters as `(name, node)`, in node order.
    pub fn params(&self) -> Vec<(&str, NodeId)> {
        self.sources(|op| match op {
            Op::Param { name, .. } => Some(name),
            _ => None,
        })
    }

    /// States as `(name, node)`, in node order.
    pub fn states(&self) -> Vec<(&str, NodeId)> {
        self.sources(|op| match op {
            Op::State { name, .. } => Some(name),
            _ => None,
        })
    }

    fn sources<'a>(
        &'a self,
        pick: impl Fn(&'a Op) -> Option<&'a String>,
    ) -> Vec<(&'a str, NodeId)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| pick(&n.op).map(|name| (name.as_str(), NodeId(i as u32))))
            .collect()
    }

    /// Every symbol mentioned by any node's type or attributes, sorted.
    pub fn symbols(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .nodes
            .iter()
            .flat_map(|n| n.ty.shape.dims().iter().chain(n.op.attribute_dims()))
            .flat_map(|d| d.symbols())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}
