//! What every device's executable shares: the error type, and [`Program`], a compiled graph's
//! schedule with the checks a run needs before any kernel starts (names, dtypes and shapes of
//! inputs, params and states; symbol values inferred from shapes; the bounds kernels cannot
//! check themselves).

use crate::weights::WeightTensor;
use kiln_compiler::backend::cpu::CodegenError;
use kiln_compiler::backend::wgsl::WgslError;
use kiln_compiler::loop_ir::BufferId;
use kiln_compiler::memory::PlanEvalError;
use kiln_compiler::schedule::{BufferKind, Schedule};
use kiln_compiler::Compiled;
use kiln_ir::{Bindings, DType, Dim, DimError, Graph, Op, ReduceOp, Tensor, TensorType};
use std::collections::HashSet;

/// Why an executable (CPU or wgpu) could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The WGSL backend could not compile a kernel.
    #[error(transparent)]
    Wgsl(#[from] WgslError),
    /// The GPU (wgpu) refused something: no adapter, a device limit, a failed submission.
    #[error("wgpu: {0}")]
    Device(String),
    /// Code generation failed.
    #[error(transparent)]
    Codegen(#[from] CodegenError),
    /// A symbol or size could not be evaluated.
    #[error(transparent)]
    Dim(#[from] DimError),
    /// The memory plan could not be resolved.
    #[error(transparent)]
    Plan(#[from] PlanEvalError),
    /// A tensor the graph needs was not given.
    #[error("no value given for {kind} `{name}`")]
    Missing {
        /// "input", "param" or "state".
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A name the graph does not have.
    #[error("the graph has no {kind} named `{name}`")]
    Unknown {
        /// "input", "param" or "state".
        kind: &'static str,
        /// The name given.
        name: String,
    },
    /// A tensor of the wrong dtype or shape.
    #[error("{kind} `{name}`: expected {expected}, got {got}")]
    Mismatch {
        /// "input", "param" or "state".
        kind: &'static str,
        /// Its name.
        name: String,
        /// The declared type (shape evaluated where possible).
        expected: String,
        /// What was given.
        got: String,
    },
    /// A kernel read or wrote through a data-dependent index outside its buffer (e.g. a
    /// token id beyond the vocabulary); the access was clamped and the results are invalid.
    #[error(
        "kernel {kernel}: a data-dependent index (gather, embedding, scatter) was out of range"
    )]
    IndexOutOfRange {
        /// The kernel.
        kernel: String,
    },
    /// A buffer smaller than a kernel's declared extent (a runtime bug, reported instead of
    /// letting the kernel touch foreign memory).
    #[error("kernel {kernel}: buffer b{buffer} holds {have} bytes, the kernel needs {need}")]
    BufferTooSmall {
        /// The kernel.
        kernel: String,
        /// The buffer.
        buffer: u32,
        /// Bytes allocated.
        have: usize,
        /// Bytes the kernel's parameter declares.
        need: usize,
    },
    /// An i64 value (a token id, a gather index) outside the 32 bits the WGSL backend computes
    /// integers in; the results are invalid.
    #[error("kernel {kernel}: an i64 value outside the 32-bit range the WGSL backend computes in")]
    Int64Range {
        /// The kernel.
        kernel: String,
    },
    /// The thread pool could not be created.
    #[error("thread pool: {0}")]
    Threads(String),
    /// The symbol values violate a condition the graph needs (a slice past the end of its
    /// operand, a KV-cache write past its capacity, a negative size, a max over no
    /// elements): kernels compute flat indices and cannot check these themselves.
    #[error("{what}: needs {condition}, but that is {lo} <= {hi} with these symbol values")]
    Bounds {
        /// The node (`%12 slice`).
        what: String,
        /// The condition, symbolically.
        condition: String,
        /// Its left side's value.
        lo: i64,
        /// Its right side's value.
        hi: i64,
    },
}

/// The inputs a run uses, each with its buffer.
pub type UsedInputs<'t> = Vec<(BufferId, &'t Tensor)>;

/// A compiled graph's schedule and the checks of its runs.
pub struct Program {
    /// The schedule being run.
    pub schedule: Schedule,
    /// Inputs, params and states the graph declares but no kernel reads (the schedule has
    /// no buffer for them): values given for them are ignored, as the interpreter does.
    unused: Vec<(&'static str, String, TensorType)>,
    /// Conditions on the symbol values, checked before every run ([`bounds`]).
    bounds: Vec<Bound>,
}

impl Program {
    /// The program of `compiled`.
    pub fn new(compiled: &Compiled) -> Program {
        let g = &compiled.graph;
        let declared = (g.inputs().into_iter().map(|(n, id)| ("input", n, id)))
            .chain(g.params().into_iter().map(|(n, id)| ("param", n, id)))
            .chain(g.states().into_iter().map(|(n, id)| ("state", n, id)));
        let unused = declared
            .filter(|&(kind, name, _)| {
                !compiled.schedule.buffers.iter().any(|b| match &b.kind {
                    BufferKind::Input(n) => kind == "input" && n == name,
                    BufferKind::Param(n) => kind == "param" && n == name,
                    BufferKind::State(n) => kind == "state" && n == name,
                    _ => false,
                })
            })
            .map(|(kind, name, id)| (kind, name.to_string(), g.ty(id).clone()))
            .collect();
        Program {
            schedule: compiled.schedule.clone(),
            unused,
            bounds: bounds(&compiled.graph),
        }
    }

    /// The buffer of the input, param or state `name` (`kind` says which).
    pub fn find(&self, kind: &'static str, name: &str) -> Result<BufferId, ExecError> {
        self.schedule
            .buffers
            .iter()
            .find(|b| match (&b.kind, kind) {
                (BufferKind::Param(n), "param") => n == name,
                (BufferKind::State(n), "state") => n == name,
                (BufferKind::Input(n), "input") => n == name,
                _ => false,
            })
            .map(|b| b.id)
            .ok_or_else(|| ExecError::Unknown {
                kind,
                name: name.to_string(),
            })
    }

    /// [`Self::find`], or `None` for a source the graph declares but never reads (`t` must
    /// still have its dtype, rank and constant dims, as the interpreter checks).
    pub fn find_used(
        &self,
        kind: &'static str,
        name: &str,
        t: &Tensor,
    ) -> Result<Option<BufferId>, ExecError> {
        let err = match self.find(kind, name) {
            Err(e) => e,
            r => return r.map(Some),
        };
        let Some((_, _, ty)) = self.unused.iter().find(|(k, n, _)| *k == kind && n == name) else {
            return Err(err);
        };
        let fits = t.dtype() == ty.dtype
            && t.shape().len() == ty.shape.rank()
            && (ty.shape.dims().iter().zip(t.shape()))
                .all(|(d, &n)| d.as_const().is_none_or(|c| c == n as i64));
        if !fits {
            return Err(ExecError::Mismatch {
                kind,
                name: name.to_string(),
                expected: format!("{}{}", ty.dtype, ty.shape),
                got: format!("{}{:?}", t.dtype(), t.shape()),
            });
        }
        Ok(None)
    }

    /// Checks `t` against buffer `id`'s dtype and shape (symbols bound from `bindings`
    /// where possible, otherwise any extent matches and the symbol is bound).
    pub fn check(
        &self,
        kind: &'static str,
        name: &str,
        id: BufferId,
        t: &Tensor,
        bindings: &mut Bindings,
    ) -> Result<(), ExecError> {
        let info = &self.schedule.buffers[id.0 as usize];
        let mismatch = || ExecError::Mismatch {
            kind,
            name: name.to_string(),
            expected: format!("{}{}", info.dtype, info.shape),
            got: format!("{}{:?}", t.dtype(), t.shape()),
        };
        if t.dtype() != info.dtype || t.shape().len() != info.shape.dims().len() {
            return Err(mismatch());
        }
        for (d, &n) in info.shape.dims().iter().zip(t.shape()) {
            if let Some(sym) = d.as_symbol() {
                if bindings.get(sym).is_none() {
                    bindings.set(sym, n as i64);
                }
            }
            match d.eval(bindings) {
                Ok(v) if v == n as i64 => {}
                Ok(_) => return Err(mismatch()),
                Err(_) => {} // checked once every symbol is bound, by buffer sizes
            }
        }
        Ok(())
    }

    /// The buffer a param or state `name` (`kind`) set to `t` goes into, after checking `t`'s
    /// dtype and shape (no symbols bound); `None` for one no kernel reads.
    pub fn source_buffer(
        &self,
        kind: &'static str,
        name: &str,
        t: &Tensor,
    ) -> Result<Option<BufferId>, ExecError> {
        let Some(id) = self.find_used(kind, name, t)? else {
            return Ok(None);
        };
        self.check(kind, name, id, t, &mut Bindings::new())?;
        Ok(Some(id))
    }

    /// The buffer param `name` loads into from `weight` (bytes in Kiln's layout), after
    /// checking its dtype, shape and byte count; `None` for a param no kernel reads.
    pub fn weight_buffer(
        &self,
        name: &str,
        weight: &WeightTensor,
    ) -> Result<Option<BufferId>, ExecError> {
        let id = match self.find("param", name) {
            Ok(id) => id,
            Err(e) => {
                let declared = self
                    .unused
                    .iter()
                    .find(|(k, n, _)| *k == "param" && n == name);
                let Some((_, _, ty)) = declared else {
                    return Err(e);
                };
                let fits = weight.dtype == ty.dtype && weight.shape.len() == ty.shape.rank();
                return if fits {
                    Ok(None)
                } else {
                    Err(ExecError::Mismatch {
                        kind: "param",
                        name: name.to_string(),
                        expected: format!("{}{}", ty.dtype, ty.shape),
                        got: format!("{}{:?}", weight.dtype, weight.shape),
                    })
                };
            }
        };
        let info = &self.schedule.buffers[id.0 as usize];
        let mismatch = || ExecError::Mismatch {
            kind: "param",
            name: name.to_string(),
            expected: format!("{}{}", info.dtype, info.shape),
            got: format!("{}{:?}", weight.dtype, weight.shape),
        };
        let empty = Bindings::new();
        let dims_fit = info.shape.rank() == weight.shape.len()
            && (info.shape.dims().iter().zip(&weight.shape))
                .all(|(d, &n)| d.eval(&empty).is_ok_and(|v| v == n as i64));
        let need = bytes_of(info.dtype, &info.size, &empty).ok();
        if weight.dtype != info.dtype || !dims_fit || need != Some(weight.bytes.as_slice().len()) {
            return Err(mismatch());
        }
        Ok(Some(id))
    }

    /// Checks a run's inputs (and that every input, state and param has a value: `state`
    /// gives a state's current shape, `has_param` whether a param is loaded), binds the
    /// symbols that `bindings` leaves open from the shapes of inputs and states, and checks
    /// the bounds. Returns the bindings and each used input's buffer.
    pub fn bind_run<'t>(
        &self,
        inputs: &[(&str, &'t Tensor)],
        bindings: &Bindings,
        state: &dyn Fn(&str) -> Option<Vec<usize>>,
        has_param: &dyn Fn(BufferId) -> bool,
    ) -> Result<(Bindings, UsedInputs<'t>), ExecError> {
        let mut b = bindings.clone();
        let mut used: Vec<(BufferId, &'t Tensor)> = Vec::new();
        for (name, t) in inputs {
            let Some(id) = self.find_used("input", name, t)? else {
                continue;
            };
            self.check("input", name, id, t, &mut b)?;
            used.push((id, *t));
        }
        for info in &self.schedule.buffers {
            match &info.kind {
                BufferKind::Input(n) if !used.iter().any(|(id, _)| *id == info.id) => {
                    return Err(ExecError::Missing {
                        kind: "input",
                        name: n.clone(),
                    })
                }
                BufferKind::State(n) => {
                    let Some(shape) = state(n) else {
                        return Err(ExecError::Missing {
                            kind: "state",
                            name: n.clone(),
                        });
                    };
                    for (d, &v) in info.shape.dims().iter().zip(&shape) {
                        if let Some(sym) = d.as_symbol() {
                            if b.get(sym).is_none() {
                                b.set(sym, v as i64);
                            }
                        }
                    }
                }
                BufferKind::Param(n) if !has_param(info.id) => {
                    return Err(ExecError::Missing {
                        kind: "param",
                        name: n.clone(),
                    })
                }
                _ => {}
            }
        }
        for (name, t) in inputs {
            if let Some(id) = self.find_used("input", name, t)? {
                self.check("input", name, id, t, &mut b)?;
            }
        }
        for info in &self.schedule.buffers {
            let BufferKind::State(name) = &info.kind else {
                continue;
            };
            let Some(shape) = state(name) else {
                continue;
            };
            let dims = info.shape.dims().iter().zip(&shape);
            if dims
                .into_iter()
                .any(|(d, &v)| d.eval(&b).is_ok_and(|x| x != v as i64))
            {
                return Err(ExecError::Mismatch {
                    kind: "state",
                    name: name.clone(),
                    expected: format!("{}{}", info.dtype, info.shape),
                    got: format!("{}{shape:?}", info.dtype),
                });
            }
        }
        for c in &self.bounds {
            let (lo, hi) = (c.lo.eval(&b)?, c.hi.eval(&b)?);
            if lo > hi {
                return Err(ExecError::Bounds {
                    what: c.what.clone(),
                    condition: format!("{} <= {}", c.lo, c.hi),
                    lo,
                    hi,
                });
            }
        }
        Ok((b, used))
    }
}

/// A condition `lo <= hi` on symbol values (see [`bounds`]).
#[derive(Clone, Debug)]
struct Bound {
    what: String,
    lo: Dim,
    hi: Dim,
}

/// The conditions under which every kernel stays inside its buffers, which the interpreter
/// checks per node (`EvalError::Bounds`, `NegativeDim`, `EmptyReduction`) and kernels,
/// computing flat indices, cannot: slices within their operand, slice updates (KV-cache
/// writes) within their destination, gather/scatter indices within their operand on the
/// other axes, max/min/argmax over at least one element, paddings and sizes not negative.
/// Only those of nodes the outputs and state updates need, and only symbolic ones (constant
/// ones were checked when the graph was built); each distinct condition once.
fn bounds(g: &Graph) -> Vec<Bound> {
    let mut needed = vec![false; g.nodes().len()];
    let mut stack: Vec<_> = g.result_nodes().collect();
    while let Some(id) = stack.pop() {
        if !std::mem::replace(&mut needed[id.index()], true) {
            stack.extend(g.node(id).inputs.iter().copied());
        }
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, n) in g.nodes().iter().enumerate().filter(|(i, _)| needed[*i]) {
        let size = |k: usize, axis: usize| g.ty(n.inputs[k]).shape.dims()[axis].clone();
        let mut add = |lo: Dim, hi: Dim| {
            if !(lo.is_const() && hi.is_const()) && seen.insert((lo.clone(), hi.clone())) {
                let what = format!("%{i} {}", n.op.name());
                out.push(Bound { what, lo, hi });
            }
        };
        let zero = || Dim::from(0);
        match &n.op {
            Op::Slice {
                axis, start, end, ..
            } => {
                add(zero(), start.clone());
                add(start.clone(), end.clone());
                add(end.clone(), size(0, *axis));
            }
            Op::SliceUpdate { axis, start } => {
                add(zero(), start.clone());
                add(start.clone() + size(1, *axis), size(0, *axis));
            }
            Op::Pad { pads, .. } => {
                for (before, after) in pads {
                    add(zero(), before.clone());
                    add(zero(), after.clone());
                }
            }
            // Max, min and argmax of no elements are errors, unless the result is empty too.
            Op::Reduce {
                op: ReduceOp::Max | ReduceOp::Min | ReduceOp::ArgMax,
                axes,
                ..
            } => {
                let some = n.ty.shape.numel().minimum(&Dim::from(1));
                for &a in axes {
                    add(some.clone(), size(0, a));
                }
            }
            // Indices no larger than the operand on every other axis (PyTorch's rule).
            Op::Gather { axis } | Op::Scatter { axis, .. } => {
                for d in (0..n.ty.shape.rank()).filter(|d| d != axis) {
                    if size(1, d) != size(0, d) {
                        add(size(1, d), size(0, d));
                    }
                }
            }
            _ => {}
        }
        for d in n.ty.shape.dims() {
            add(zero(), d.clone());
        }
    }
    out
}

/// Bytes of `elements` values of `dtype`.
pub fn bytes_of(dtype: DType, elements: &Dim, b: &Bindings) -> Result<usize, ExecError> {
    let n = elements.eval(b)?.max(0) as usize;
    Ok(match dtype {
        DType::Quant(q) => n.div_ceil(q.block_size()) * q.block_bytes(),
        d => n * d.size_bytes().unwrap_or(1),
    })
}

/// A shape evaluated with `b`.
pub fn eval_shape(shape: &kiln_ir::Shape, b: &Bindings) -> Result<Vec<usize>, ExecError> {
    Ok(shape
        .dims()
        .iter()
        .map(|d| d.eval(b).map(|v| v.max(0) as usize))
        .collect::<Result<Vec<_>, _>>()?)
}
