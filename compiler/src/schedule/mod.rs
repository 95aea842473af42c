//! The scheduler: partitions a [`Graph`] into kernels and lowers each to the [`crate::loop_ir`].
//!
//! # Partition
//!
//! Every needed node gets a role:
//! - **Source**: inputs, params, states and multi-element constants live in their own buffers.
//! - **Root**: a node whose value is stored in a buffer by a kernel (one kernel per root).
//! - **Inline**: a node recomputed inside its consumers' kernels as part of a scalar
//!   expression. Views (reshape, permute, expand, slice, flip, pad, concat), fills (full,
//!   iota, dim_value, one-element constants) and block-quantized values are always inline:
//!   views become index arithmetic, pad/concat/slice_update become lazy selects.
//!
//! A compute node becomes a root when: it is a graph output or state update; it is a scatter;
//! its consumers lie in more than one kernel; it feeds a matmul operand and is not a cast
//! (only views and casts — dequantization, f16 -> f32 — fuse as a matmul prologue, because a
//! prologue is recomputed for every output column); or it is the params-only boundary
//! described below. One exception to the matmul-operand rule: once a schedule is found, a
//! root stored by a plain elementwise kernel only because it feeds a matmul operand, read by
//! that one kernel, computed at run time and cheap (at most 16 compute nodes per element)
//! is inlined into the matmul as a prologue and the partition redone; the result is kept
//! when it has fewer kernels (RoPE's rotation becomes part of the attention scores matmul). The rest is found while lowering: a reduction (or matmul) that a kernel
//! would need at something other than its row index (e.g. a reduction feeding a matmul
//! operand, or two reductions with different rows) is made a root and the partition is
//! redone; this always terminates since each retry adds one root. Axes of extent 1 do not
//! count: a broadcast of a keepdim reduction reads them at 0, the row loop at its variable,
//! and both are the same row.
//!
//! # What fuses
//!
//! A kernel lowers its root's expression. If that expression reaches reductions or matmuls
//! (inline or the root itself), the kernel is a *row kernel*: loops over the shared row space
//! (a reduction's kept axes, a matmul's output), then one accumulation phase per reduction
//! in node order (later phases read earlier results as row scalars), then the epilogue,
//! stored either at the row index or, when the root has the reduction's input shape, in an
//! inner loop over the reduced axes. So softmax (max, sub/exp, sum, div), RMSNorm and
//! LayerNorm are one multi-phase kernel per row; matmul fuses its operand prologue (views,
//! dequantization, casts), its epilogue (bias, activation, residual, scale) and sibling
//! matmuls of the same row space (the SwiGLU `silu(x @ Wg) * (x @ Wu)` is one kernel with two
//! contraction phases). A matmul whose every consumer is a step-1 slice of its last axis,
//! all of one width (a merged projection sliced apart again), is computed over a row of that
//! width, one contraction phase per slice start reading columns `start + j`: the merged
//! SwiGLU `silu(m[.., 0:I]) * m[.., I:2I]` is again one kernel storing `I` columns.
//! Elementwise parts used by several phases are recomputed per phase in the loop IR; a
//! backend may store a costly one in the phase that first computes it and read it back later
//! (`crate::loop_ir::reuse`, which the CPU backend applies: a softmax's exps).
//!
//! # State updates in place
//!
//! A state whose next value is `slice_update(state, axis, start, src)` of its own current
//! value (a KV-cache write) is updated in place when that is legal (see
//! `in_place_updates`: every other kernel reading the old value runs before the update, and
//! `src` does not read it): the slice update gets no buffer of its own, its kernel loops over
//! `src` only and stores into the state's buffer at the offset, and every reader of the new
//! value reads the state's buffer. [`Schedule::state_updates`] then names the state's own
//! [`BufferKind::State`] buffer ([`Schedule::updated_in_place`]), and a runtime keeps the
//! state's storage instead of taking a new value. A state update that does not qualify (the
//! old value read after the write) is computed into a fresh output buffer as before.
//!
//! # Load time
//!
//! A node is *params-only* when it depends only on params, constants and fills with constant
//! shapes. A params-only node used by run-time work that is not a free chain (params or
//! constants under reshape/expand/slice/cast) becomes a root whose buffer is
//! [`BufferKind::Derived`]; kernels computing params-only roots are listed in
//! [`Schedule::load_time`] and run once when weights are loaded.

mod exec;
mod lower;

pub use exec::{run, Feeds, RunError};

use crate::loop_ir::{BufferId, Kernel};
use kiln_ir::{BinaryOp, DType, Dim, Graph, NodeId, Op, Shape, Tensor, UnaryOp};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// What a buffer holds.
#[derive(Clone, Debug, PartialEq)]
pub enum BufferKind {
    /// The graph input with this name.
    Input(String),
    /// The weight with this name.
    Param(String),
    /// The current value of the state with this name.
    State(String),
    /// A constant from the graph.
    Constant(Arc<Tensor>),
    /// A graph output or new state value (see [`Schedule::outputs`] and
    /// [`Schedule::state_updates`]).
    Output,
    /// A value computed from params once, at load time.
    Derived,
    /// A value produced and consumed within one run.
    Intermediate,
    /// Scratch memory private to one launch.
    Scratch,
}

/// A buffer of a schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct BufferInfo {
    /// Id (index into [`Schedule::buffers`]).
    pub id: BufferId,
    /// Element type.
    pub dtype: DType,
    /// Logical shape (symbolic).
    pub shape: Shape,
    /// Element count (symbolic).
    pub size: Dim,
    /// What it holds.
    pub kind: BufferKind,
    /// The graph node whose value it holds (none for scratch).
    pub node: Option<NodeId>,
}

/// One kernel launch: the kernel and the buffers it reads and writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// Index into [`Schedule::kernels`].
    pub kernel: usize,
    /// Buffers read.
    pub inputs: Vec<BufferId>,
    /// Buffers written (scratch included).
    pub outputs: Vec<BufferId>,
}

/// A graph partitioned into kernels.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// Every kernel.
    pub kernels: Vec<Kernel>,
    /// Every buffer.
    pub buffers: Vec<BufferInfo>,
    /// Per-run launches, in order.
    pub launches: Vec<Launch>,
    /// Launches run once after the weights are loaded, in order, before any run.
    pub load_time: Vec<Launch>,
    /// Graph outputs: name and buffer.
    pub outputs: Vec<(String, BufferId)>,
    /// State updates: state name and the buffer holding its next value, which is the
    /// state's own buffer when it is updated in place (see the module docs).
    pub state_updates: Vec<(String, BufferId)>,
}

impl Schedule {
    /// Whether state `name` is updated in place: its update kernel writes the state's own
    /// buffer (only the updated slice), and no new value is produced.
    pub fn updated_in_place(&self, name: &str) -> bool {
        self.state_updates.iter().any(|(n, id)| {
            n == name
                && matches!(&self.buffers[id.0 as usize].kind, BufferKind::State(s) if s == name)
        })
    }
}

/// Why a graph could not be scheduled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// A node the scheduler cannot lower.
    #[error("cannot schedule {node} ({op}): {reason}")]
    Unsupported {
        /// The node.
        node: NodeId,
        /// Its op name.
        op: String,
        /// Why.
        reason: String,
    },
}

/// A node's role in the partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Not needed by any output or state update.
    Dead,
    /// Has its own buffer, no kernel.
    Source,
    /// Computed inside consumers.
    Inline,
    /// Stored by its own kernel.
    Root,
}

fn is_view_like(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape { .. }
            | Op::Permute { .. }
            | Op::Expand { .. }
            | Op::Slice { .. }
            | Op::Flip { .. }
            | Op::Pad { .. }
            | Op::Concat { .. }
    )
}

fn is_fill(op: &Op) -> bool {
    matches!(op, Op::Full { .. } | Op::Iota { .. } | Op::DimValue { .. })
        || matches!(op, Op::Constant { value } if value.numel() == 1)
}

fn is_source(op: &Op) -> bool {
    matches!(op, Op::Input { .. } | Op::Param { .. } | Op::State { .. })
        || matches!(op, Op::Constant { value } if value.numel() != 1)
}

/// Params-only: depends on nothing that changes per run, with constant shapes.
fn params_only(g: &Graph) -> Vec<bool> {
    let mut out = vec![false; g.nodes().len()];
    for (i, n) in g.nodes().iter().enumerate() {
        let const_shape = n.ty.shape.dims().iter().all(|d| d.is_const())
            && n.op.attribute_dims().iter().all(|d| d.is_const());
        out[i] = const_shape
            && match &n.op {
                Op::Input { .. } | Op::State { .. } => false,
                Op::Param { .. } | Op::Constant { .. } | Op::Full { .. } | Op::Iota { .. } => true,
                Op::DimValue { .. } => true,
                _ => n.inputs.iter().all(|p| out[p.index()]),
            };
    }
    out
}

/// A free chain: params, constants or fills under reshape/expand/slice/cast only.
fn free_chain(g: &Graph, id: NodeId) -> bool {
    let n = g.node(id);
    match &n.op {
        Op::Param { .. } | Op::Constant { .. } => true,
        op if is_fill(op) => true,
        Op::Reshape { .. } | Op::Expand { .. } | Op::Slice { .. } | Op::Cast { .. } => {
            free_chain(g, n.inputs[0])
        }
        _ => false,
    }
}

/// Index-only values: computed from positions and symbols alone (iota, dim values, scalar
/// fills) by cheap integer, comparison and logical ops, reading no memory. They are
/// recomputed wherever they are used instead of being stored, even when several kernels use
/// them: a causal mask `col > row + past` costs a compare per element inline and a load from
/// a bool buffer otherwise, and inline it is an index expression a backend can reason about
/// (the CPU matmul driver bounds each row block's live columns with it).
fn index_only(g: &Graph) -> Vec<bool> {
    let mut out = vec![false; g.nodes().len()];
    for (i, n) in g.nodes().iter().enumerate() {
        let int_or_bool = n.ty.dtype.is_int() || n.ty.dtype == DType::Bool;
        out[i] = int_or_bool
            && match &n.op {
                Op::Iota { .. } | Op::DimValue { .. } | Op::Full { .. } => true,
                Op::Unary(UnaryOp::Not | UnaryOp::Neg | UnaryOp::Abs) => out[n.inputs[0].index()],
                Op::Binary(b) => {
                    !matches!(b, BinaryOp::Pow | BinaryOp::Div | BinaryOp::Mod)
                        && n.inputs.iter().all(|p| out[p.index()])
                }
                Op::Where => n.inputs.iter().all(|p| out[p.index()]),
                Op::Reshape { .. } | Op::Expand { .. } => out[n.inputs[0].index()],
                _ => false,
            };
    }
    out
}

/// Assigns roles, with `forced` nodes made roots and `prologue` nodes (see
/// [`prologue_candidates`]) inlined into the matmul operands they feed.
fn partition(g: &Graph, forced: &BTreeSet<NodeId>, prologue: &BTreeSet<NodeId>) -> Vec<Role> {
    let nodes = g.nodes();
    let n = nodes.len();
    let roots: BTreeSet<NodeId> = g.result_nodes().collect();
    let mut needed = vec![false; n];
    for r in &roots {
        needed[r.index()] = true;
    }
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in (0..n).rev() {
        if needed[i] {
            for p in &nodes[i].inputs {
                needed[p.index()] = true;
                if !consumers[p.index()].contains(&i) {
                    consumers[p.index()].push(i);
                }
            }
        }
    }
    let po = params_only(g);
    let cheap = index_only(g);
    let mut roles = vec![Role::Dead; n];
    let mut owners: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    let mut mm_ctx = vec![false; n];
    for i in (0..n).rev() {
        if !needed[i] {
            continue;
        }
        let node = &nodes[i];
        let id = NodeId(i as u32);
        let mut own = BTreeSet::new();
        let mut feeds_mm = false;
        let mut boundary = roots.contains(&id);
        for &c in &consumers[i] {
            if roles[c] == Role::Root {
                own.insert(c);
            } else {
                own.extend(owners[c].iter().copied());
            }
            let cop = &nodes[c].op;
            feeds_mm |= matches!(cop, Op::MatMul { .. })
                || ((is_view_like(cop) || matches!(cop, Op::Cast { .. }))
                    && roles[c] != Role::Root
                    && mm_ctx[c]);
            boundary |= !po[c];
        }
        let quant = node.ty.dtype.is_quantized();
        let role = if is_source(&node.op) {
            Role::Source
        } else if roots.contains(&id) || matches!(node.op, Op::Scatter { .. }) {
            Role::Root
        } else if quant || is_fill(&node.op) {
            Role::Inline
        } else if po[i] && boundary && !free_chain(g, id) {
            Role::Root
        } else if is_view_like(&node.op) || (cheap[i] && !forced.contains(&id)) {
            Role::Inline
        } else if forced.contains(&id)
            || own.len() > 1
            || (feeds_mm && !matches!(node.op, Op::Cast { .. }) && !prologue.contains(&id))
        {
            Role::Root
        } else {
            Role::Inline
        };
        roles[i] = role;
        if role == Role::Root {
            owners[i] = BTreeSet::from([i]);
        } else {
            owners[i] = own;
            mm_ctx[i] = feeds_mm;
        }
    }
    roles
}

/// Schedules `graph`: partitions it into kernels and lowers them (see the module docs).
pub fn schedule(graph: &Graph) -> Result<Schedule, ScheduleError> {
    let mut forced = BTreeSet::new();
    let mut prologue = BTreeSet::new();
    let mut best = settle(graph, &mut forced, &prologue)?;
    // Elementwise kernels that only feed matmul operands become those matmuls' prologues.
    loop {
        let fresh: Vec<NodeId> = prologue_candidates(graph, &forced, &prologue, &best)
            .into_iter()
            .filter(|n| !prologue.contains(n))
            .collect();
        if fresh.is_empty() {
            return Ok(best);
        }
        let mut try_prologue = prologue.clone();
        try_prologue.extend(fresh);
        let mut try_forced = forced.clone();
        match settle(graph, &mut try_forced, &try_prologue) {
            Ok(s) if s.kernels.len() < best.kernels.len() => {
                best = s;
                forced = try_forced;
                prologue = try_prologue;
            }
            _ => return Ok(best),
        }
    }
}

/// Partitions and lowers until no lowering asks for another root.
fn settle(
    graph: &Graph,
    forced: &mut BTreeSet<NodeId>,
    prologue: &BTreeSet<NodeId>,
) -> Result<Schedule, ScheduleError> {
    loop {
        let roles = partition(graph, forced, prologue);
        match build(graph, &roles)? {
            Ok(s) => return Ok(s),
            Err(lower::Need(node)) => {
                let fresh = forced.insert(stored_with_successors(graph, node));
                let op = &graph.node(node).op;
                if !fresh || is_source(op) || graph.ty(node).dtype.is_quantized() {
                    return Err(ScheduleError::Unsupported {
                        node,
                        op: op.name(),
                        reason: "cannot be fused here nor stored".into(),
                    });
                }
            }
        }
    }
}

/// The node to store when a lowering needs `node` stored: `node` followed through its
/// same-shape elementwise successors (unary, binary, select, cast) for as long as each node
/// on the way has that successor as its only consumer and is not itself a graph output. The
/// successors then run once in the producing kernel (a matmul's epilogue: attention's scale
/// and causal mask after the scores product) instead of once per phase of every kernel that
/// reads the value (the softmax's max, sum and normalizing loops), and the stored buffer
/// has the same size either way.
fn stored_with_successors(g: &Graph, node: NodeId) -> NodeId {
    let outputs: BTreeSet<NodeId> = g.result_nodes().collect();
    let mut consumers: Vec<Vec<NodeId>> = vec![Vec::new(); g.nodes().len()];
    for (i, n) in g.nodes().iter().enumerate() {
        for p in &n.inputs {
            if !consumers[p.index()].contains(&NodeId(i as u32)) {
                consumers[p.index()].push(NodeId(i as u32));
            }
        }
    }
    let mut at = node;
    while !outputs.contains(&at) {
        let [next] = consumers[at.index()][..] else {
            break;
        };
        let n = g.node(next);
        let elementwise = matches!(
            n.op,
            Op::Unary(_) | Op::Binary(_) | Op::Where | Op::Cast { .. }
        );
        if !elementwise || n.ty.shape != g.ty(at).shape {
            break;
        }
        at = next;
    }
    at
}

/// The most compute nodes an elementwise prologue may recompute per multiply-add.
const PROLOGUE_OPS: usize = 16;

/// Roots of `s` stored by a plain elementwise kernel only because they feed a matmul operand:
/// computed at run time, neither output nor forced, used by one kernel only, and cheap (at
/// most [`PROLOGUE_OPS`] compute nodes inline in their kernel). Such a value is recomputed
/// inside the matmul that reads it (RoPE before the attention scores, a scale before a
/// projection) instead of making a round trip through memory.
fn prologue_candidates(
    g: &Graph,
    forced: &BTreeSet<NodeId>,
    prologue: &BTreeSet<NodeId>,
    s: &Schedule,
) -> Vec<NodeId> {
    let roles = partition(g, forced, prologue);
    let po = params_only(g);
    let outputs: BTreeSet<NodeId> = g.result_nodes().collect();
    // Which kernel reads each root (through inline nodes).
    let mut readers: Vec<BTreeSet<NodeId>> = vec![BTreeSet::new(); g.nodes().len()];
    for (i, n) in g.nodes().iter().enumerate().rev() {
        if roles[i] == Role::Dead || roles[i] == Role::Source {
            continue;
        }
        let me: BTreeSet<NodeId> = if roles[i] == Role::Root {
            BTreeSet::from([NodeId(i as u32)])
        } else {
            readers[i].clone()
        };
        for p in &n.inputs {
            readers[p.index()].extend(me.iter().copied());
        }
    }
    let mut out = Vec::new();
    for k in &s.kernels {
        if k.kind != crate::loop_ir::KernelKind::Elementwise {
            continue;
        }
        let Some(root) = s
            .buffers
            .iter()
            .find(|b| {
                k.params
                    .iter()
                    .any(|p| p.id == b.id && p.role == crate::loop_ir::BufferRole::Output)
            })
            .and_then(|b| b.node)
        else {
            continue;
        };
        let i = root.index();
        if roles[i] != Role::Root
            || outputs.contains(&root)
            || forced.contains(&root)
            || po[i]
            || is_view_like(&g.node(root).op)
            || readers[i].len() != 1
        {
            continue;
        }
        let reader = *readers[i].iter().next().expect("one reader");
        if !matches!(g.node(reader).op, Op::MatMul { .. })
            && !reads_through_matmul(g, &roles, reader, root)
        {
            continue;
        }
        if inline_ops(g, &roles, root) <= PROLOGUE_OPS {
            out.push(root);
        }
    }
    out
}

/// Whether the kernel of `reader` reaches `root` through an inline matmul's operand.
fn reads_through_matmul(g: &Graph, roles: &[Role], reader: NodeId, root: NodeId) -> bool {
    let mut stack = vec![(reader, false)];
    let mut seen = BTreeSet::new();
    while let Some((n, via)) = stack.pop() {
        if !seen.insert((n, via)) {
            continue;
        }
        let nd = g.node(n);
        let via = via || matches!(nd.op, Op::MatMul { .. });
        for &p in &nd.inputs {
            if p == root {
                if via {
                    return true;
                }
            } else if roles[p.index()] == Role::Inline {
                stack.push((p, via));
            }
        }
    }
    false
}

/// Compute nodes (not views nor fills) evaluated inline for one element of `root`.
fn inline_ops(g: &Graph, roles: &[Role], root: NodeId) -> usize {
    let mut seen = BTreeSet::new();
    let mut stack = vec![root];
    let mut count = 0;
    while let Some(n) = stack.pop() {
        if !seen.insert(n) {
            continue;
        }
        let nd = g.node(n);
        if !is_view_like(&nd.op) && !is_fill(&nd.op) {
            count += 1;
        }
        for &p in &nd.inputs {
            if roles[p.index()] == Role::Inline {
                stack.push(p);
            }
        }
    }
    count
}

/// State updates written in place, as a map from the update node to the state node: the
/// state's next value is `slice_update(state, axis, start, src)` of its own current value
/// (a KV-cache write), so the update kernel can store just `src` into the state's buffer
/// instead of copying the whole state into a new one. Legal when every other kernel reading
/// the state's old value is launched before the update (launches follow node order, a
/// source's copy kernel sits at the source), the update kernel reads the old value only as
/// the slice update's base (not through `src`), the value updates no other state, and it is
/// not block-quantized (a partial block cannot be stored alone).
fn in_place_updates(g: &Graph, roles: &[Role]) -> HashMap<NodeId, NodeId> {
    let mut out = HashMap::new();
    let updates = g.state_updates();
    for (name, upd) in updates {
        let node = g.node(*upd);
        let Op::SliceUpdate { .. } = node.op else {
            continue;
        };
        let base = node.inputs[0];
        let is_state = matches!(&g.node(base).op, Op::State { name: n, .. } if n == name);
        if !is_state
            || roles[upd.index()] != Role::Root
            || roles[base.index()] != Role::Source
            || node.ty.dtype.is_quantized()
            || updates.iter().filter(|(_, u)| u == upd).count() != 1
        {
            continue;
        }
        // reach[i]: evaluating node `i` inline reads the old value.
        let mut reach = vec![false; g.nodes().len()];
        reach[base.index()] = true;
        let mut legal = true;
        for (i, n) in g.nodes().iter().enumerate().skip(base.index() + 1) {
            let reads = n.inputs.iter().any(|p| reach[p.index()]);
            match roles[i] {
                Role::Inline => reach[i] = reads,
                Role::Root if i == upd.index() => {
                    legal &= !reach[node.inputs[1].index()];
                }
                Role::Root if reads && i > upd.index() => legal = false,
                _ => {}
            }
        }
        if legal {
            out.insert(*upd, base);
        }
    }
    out
}

type Built = Result<Schedule, lower::Need>;

fn build(g: &Graph, roles: &[Role]) -> Result<Built, ScheduleError> {
    let po = params_only(g);
    let mut s = Schedule {
        kernels: Vec::new(),
        buffers: Vec::new(),
        launches: Vec::new(),
        load_time: Vec::new(),
        outputs: Vec::new(),
        state_updates: Vec::new(),
    };
    let roots: BTreeSet<NodeId> = g.result_nodes().collect();
    let in_place = in_place_updates(g, roles);
    let mut buf_of: HashMap<NodeId, BufferId> = HashMap::new();
    let add_buffer = |s: &mut Schedule, node: Option<NodeId>, dtype, shape: Shape, kind| {
        let id = BufferId(s.buffers.len() as u32);
        s.buffers.push(BufferInfo {
            id,
            dtype,
            size: shape.numel(),
            shape,
            kind,
            node,
        });
        id
    };
    for (i, n) in g.nodes().iter().enumerate() {
        let id = NodeId(i as u32);
        if let Some(state) = in_place.get(&id) {
            // The state's own buffer (created already: the state node comes first).
            let b = buf_of[state];
            buf_of.insert(id, b);
            continue;
        }
        let kind = match (roles[i], &n.op) {
            (Role::Source, Op::Input { name, .. }) => BufferKind::Input(name.clone()),
            (Role::Source, Op::Param { name, .. }) => BufferKind::Param(name.clone()),
            (Role::Source, Op::State { name, .. }) => BufferKind::State(name.clone()),
            (Role::Source, Op::Constant { value }) => BufferKind::Constant(value.clone()),
            (Role::Root, _) if roots.contains(&id) => BufferKind::Output,
            (Role::Root, _) if po[i] => BufferKind::Derived,
            (Role::Root, _) => BufferKind::Intermediate,
            _ => continue,
        };
        let b = add_buffer(&mut s, Some(id), n.ty.dtype, n.ty.shape.clone(), kind);
        buf_of.insert(id, b);
    }
    // Outputs that are sources get a copy kernel into a fresh output buffer.
    let mut copies: HashMap<NodeId, BufferId> = HashMap::new();
    for id in g.result_nodes() {
        if roles[id.index()] == Role::Source && !copies.contains_key(&id) {
            let n = g.node(id);
            let b = add_buffer(
                &mut s,
                Some(id),
                n.ty.dtype,
                n.ty.shape.clone(),
                BufferKind::Output,
            );
            copies.insert(id, b);
        }
    }
    let out_buf = |id: &NodeId| copies.get(id).or(buf_of.get(id)).copied();
    for (name, id) in g.outputs() {
        s.outputs
            .push((name.clone(), out_buf(id).expect("outputs have buffers")));
    }
    for (name, id) in g.state_updates() {
        s.state_updates.push((
            name.clone(),
            out_buf(id).expect("state updates have buffers"),
        ));
    }
    let mut jobs: Vec<(NodeId, BufferId)> = Vec::new();
    for (i, r) in roles.iter().enumerate() {
        let id = NodeId(i as u32);
        if *r == Role::Root {
            jobs.push((id, buf_of[&id]));
        }
        if let Some(&b) = copies.get(&id) {
            jobs.push((id, b));
        }
    }
    for (node, dest) in jobs {
        let mut cx = lower::Lowering::new(g, roles, &buf_of, &mut s.buffers);
        let kernel = match cx.kernel(node, dest, s.kernels.len())? {
            Ok(k) => k,
            Err(need) => return Ok(Err(need)),
        };
        let launch = Launch {
            kernel: s.kernels.len(),
            inputs: kernel
                .params
                .iter()
                .filter(|p| {
                    matches!(
                        p.role,
                        crate::loop_ir::BufferRole::Input | crate::loop_ir::BufferRole::State
                    )
                })
                .map(|p| p.id)
                .collect(),
            outputs: kernel
                .params
                .iter()
                .filter(|p| {
                    matches!(
                        p.role,
                        crate::loop_ir::BufferRole::Output | crate::loop_ir::BufferRole::Scratch
                    )
                })
                .map(|p| p.id)
                .collect(),
        };
        s.kernels.push(kernel);
        let load_time = po[node.index()] && !roots.contains(&node);
        if load_time {
            s.load_time.push(launch);
        } else {
            s.launches.push(launch);
        }
    }
    Ok(Ok(s))
}
