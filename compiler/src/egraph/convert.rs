//! Conversion between [`Graph`] and the e-graph, and extraction back to a [`Graph`].

use super::cost::{CostModel, EggCost};
use super::lang::{KGraph, KNode, KilnAnalysis};
use super::OptimizeError;
use egg::Id;
use kiln_ir::{Graph, NodeId, Op};
use std::collections::HashMap;

/// A graph loaded into an e-graph.
pub struct Loaded {
    /// The e-graph.
    pub egraph: KGraph,
    /// The e-class of every graph node, by node index.
    pub classes: Vec<Id>,
}

impl Loaded {
    /// The root classes: every output, then every state update.
    pub fn roots(&self, graph: &Graph) -> Vec<Id> {
        graph
            .result_nodes()
            .map(|id| self.egraph.find(self.classes[id.index()]))
            .collect()
    }
}

/// Loads every node of `graph` into a new e-graph (identical nodes share a class).
pub fn to_egraph(graph: &Graph) -> Loaded {
    let mut egraph = KGraph::new(KilnAnalysis::default());
    let mut classes = Vec::with_capacity(graph.nodes().len());
    for node in graph.nodes() {
        let op = egraph.analysis.intern(node.op.clone());
        let children = node.inputs.iter().map(|i| classes[i.index()]).collect();
        classes.push(egraph.add(KNode { op, children }));
    }
    egraph.rebuild();
    Loaded { egraph, classes }
}

/// Extracts the cheapest graph computing `original`'s outputs and state updates from
/// `loaded` (which must have been made from `original` and only rewritten since).
///
/// The new graph is built with [`Graph::push`], so every type is checked again. It starts
/// with every input, param and state of `original`, in their order (even unused ones), then
/// holds the cheapest term of each root, operands first, roots in output then state-update
/// order; outputs and state updates keep their names. Ties between equally cheap nodes go to
/// the first in the e-class, so the result is deterministic.
pub fn extract(
    original: &Graph,
    loaded: &Loaded,
    model: &CostModel,
) -> Result<Graph, OptimizeError> {
    let egraph = &loaded.egraph;
    let extractor = egg::Extractor::new(egraph, EggCost { model, egraph });
    let mut g = Graph::new();
    let mut memo: HashMap<Id, NodeId> = HashMap::new();
    for (i, node) in original.nodes().iter().enumerate() {
        if matches!(
            node.op,
            Op::Input { .. } | Op::Param { .. } | Op::State { .. }
        ) {
            let id = g.push(node.op.clone(), vec![])?;
            memo.insert(egraph.find(loaded.classes[i]), id);
        }
    }
    let mut emit = |root: Id, g: &mut Graph| -> Result<NodeId, OptimizeError> {
        let mut stack = vec![(egraph.find(root), false)];
        while let Some((class, ready)) = stack.pop() {
            if memo.contains_key(&class) {
                continue;
            }
            let node = extractor.find_best_node(class);
            if !ready {
                stack.push((class, true));
                for c in node.children.iter().rev() {
                    let c = egraph.find(*c);
                    if !memo.contains_key(&c) {
                        stack.push((c, false));
                    }
                }
            } else {
                let mut ins = Vec::with_capacity(node.children.len());
                for c in &node.children {
                    let id = memo
                        .get(&egraph.find(*c))
                        .ok_or(OptimizeError::Extraction("the cheapest term is cyclic"))?;
                    ins.push(*id);
                }
                let id = g.push(egraph.analysis.op(node.op).clone(), ins)?;
                memo.insert(class, id);
            }
        }
        Ok(memo[&egraph.find(root)])
    };
    for (name, id) in original.outputs() {
        let n = emit(loaded.classes[id.index()], &mut g)?;
        g.set_output(name, n)?;
    }
    for (name, id) in original.state_updates() {
        let n = emit(loaded.classes[id.index()], &mut g)?;
        g.set_state_update(name, n)?;
    }
    Ok(g)
}
