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
//! described below. The rest is found while lowering: a reduction (or matmul) that a kernel
//! would need at something other than its row index (e.g. a reduction feeding a matmul
//! operand, or two reductions with different rows) is made a root and the partition is
//! redone; this always terminates since each retry adds one root.
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
//! contraction phases). Elementwise parts used by several phases are recomputed per phase.
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
use kiln_ir::{DType, Dim, Graph, NodeId, Op, Shape, Tensor};
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
    /// State updates: state name and the buffer holding its next value.
    pub state_updates: Vec<(String, BufferId)>,
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

/// Assigns roles, with `forced` nodes made roots.
fn partition(g: &Graph, forced: &BTreeSet<NodeId>) -> Vec<Role> {
    let nodes = g.nodes();
    let n = nodes.len();
    let roots: BTreeSet<NodeId> = g
        .outputs()
        .iter()
        .chain(g.state_updates())
        .map(|(_, id)| *id)
        .collect();
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
        } else if is_view_like(&node.op) {
            Role::Inline
        } else if forced.contains(&id)
            || own.len() > 1
            || (feeds_mm && !matches!(node.op, Op::Cast { .. }))
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
    loop {
        let roles = partition(graph, &forced);
        match build(graph, &roles)? {
            Ok(s) => return Ok(s),
            Err(lower::Need(node)) => {
                let fresh = forced.insert(node);
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
    let roots: BTreeSet<NodeId> = g
        .outputs()
        .iter()
        .chain(g.state_updates())
        .map(|(_, id)| *id)
        .collect();
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
    for (_, id) in g.outputs().iter().chain(g.state_updates()) {
        if roles[id.index()] == Role::Source && !copies.contains_key(id) {
            let n = g.node(*id);
            let b = add_buffer(
                &mut s,
                Some(*id),
                n.ty.dtype,
                n.ty.shape.clone(),
                BufferKind::Output,
            );
            copies.insert(*id, b);
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
