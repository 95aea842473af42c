//! The symbolic tensor handle that model code is written against.
//!
//! A [`Tensor`] is a node of the graph being traced plus the trace it belongs to. Its methods
//! mirror PyTorch's (`matmul`, `sum(dim, keepdim)`, `view`, `transpose`, `softmax`, ...);
//! dims may be negative (counted from the end) and shapes may hold symbols. Nothing is
//! computed: each call appends IR nodes. Misuse never panics at the call site; the first error
//! is recorded with the call's source location and returned by [`crate::Trace::finish`].

mod axes;
mod create;
mod elementwise;
mod index;
mod linalg;
mod ops;
mod reduce;
mod shape_ops;

pub use axes::{AxisList, Scalarish};

use crate::trace::{TraceErrorKind, Tracer};
use kiln_ir::{DType, Dim, Graph, IrError, NodeId, Shape, TensorType};
use std::panic::Location;
use std::rc::Rc;

/// A symbolic tensor: a node in the graph being traced.
#[derive(Clone)]
pub struct Tensor {
    pub(crate) id: NodeId,
    pub(crate) tracer: Tracer,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({} {})", self.id, self.ty())
    }
}

impl Tensor {
    pub(crate) fn from_node(tracer: Tracer, id: NodeId) -> Tensor {
        Tensor { id, tracer }
    }

    /// The node in the traced graph.
    pub fn node(&self) -> NodeId {
        self.id
    }

    /// The tensor's type (dtype and symbolic shape).
    pub fn ty(&self) -> TensorType {
        self.tracer.0.borrow().graph.ty(self.id).clone()
    }

    /// The symbolic shape.
    pub fn shape(&self) -> Shape {
        self.ty().shape
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.ty().dtype
    }

    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.ty().rank()
    }

    /// The size of axis `dim` (negative counts from the end). An invalid axis records an
    /// error and returns 1.
    #[track_caller]
    pub fn size(&self, dim: isize) -> Dim {
        match self.axis("size", dim, Location::caller()) {
            Some(a) => self.shape()[a].clone(),
            None => Dim::constant(1),
        }
    }

    /// Resolves a possibly negative axis for `op`; records an error if out of range.
    pub(crate) fn axis(&self, op: &str, dim: isize, loc: &Location<'_>) -> Option<usize> {
        resolve_axis(dim, self.rank()).or_else(|| {
            self.usage(
                loc,
                format!("{op}: dim {dim} is out of range for {}", self.ty()),
            );
            None
        })
    }

    /// Resolves a list of axes (negative allowed) for `op`, sorted and deduplicated.
    pub(crate) fn axes(&self, op: &str, dims: &[isize], loc: &Location<'_>) -> Option<Vec<usize>> {
        let mut out = Vec::with_capacity(dims.len());
        for &d in dims {
            out.push(self.axis(op, d, loc)?);
        }
        out.sort_unstable();
        out.dedup();
        Some(out)
    }

    /// Records a usage error and returns a placeholder tensor.
    pub(crate) fn usage(&self, loc: &Location<'_>, message: String) -> Tensor {
        self.tracer.record(loc, TraceErrorKind::Usage(message));
        self.tracer.placeholder()
    }

    /// Applies a graph-building step to this tensor's trace.
    pub(crate) fn build(
        &self,
        loc: &Location<'_>,
        f: impl FnOnce(&mut Graph) -> Result<NodeId, IrError>,
    ) -> Tensor {
        self.tracer.push_with(loc, f)
    }

    /// The node of `other` if it belongs to the same trace; else records an error naming
    /// `op` and both tensors.
    pub(crate) fn same_trace(
        &self,
        op: &str,
        other: &Tensor,
        loc: &Location<'_>,
    ) -> Option<NodeId> {
        if Rc::ptr_eq(&self.tracer.0, &other.tracer.0) {
            return Some(other.id);
        }
        self.usage(
            loc,
            format!(
                "{op}: {} and {} belong to different traces",
                self.ty(),
                other.ty()
            ),
        );
        None
    }
}

/// `dim` as an index into `0..rank`, counting negative dims from the end.
pub(crate) fn resolve_axis(dim: isize, rank: usize) -> Option<usize> {
    let r = rank as isize;
    let d = if dim < 0 { dim + r } else { dim };
    (0..r).contains(&d).then_some(d as usize)
}
