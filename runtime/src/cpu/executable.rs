//! Runs a compiled graph on the CPU: JIT-compiled kernels, weights loaded once, one arena for
//! the intermediates (the memory plan's offsets, resolved per set of symbol values),
//! persistent state buffers, and parallel loops split across a team of spinning threads
//! (`team.rs`).

use super::bytes::{tensor_bytes, tensor_from_bytes, AlignedBytes};
use super::gemm::{derived_kernels, run_gemm, GemmError, GemmKernel};
use super::profile::Profile;
use super::switches;
use super::team::max_over;
use crate::weights::{WeightBytes, WeightTensor};
use kiln_compiler::backend::cpu::matmul::plan_matmul;
use kiln_compiler::backend::cpu::parallel::work_per_item;
use kiln_compiler::backend::cpu::{compile_kernels, CodegenError, JitKernel};
use kiln_compiler::loop_ir::BufferId;
use kiln_compiler::memory::{MemoryPlan, PlanEvalError};
use kiln_compiler::schedule::{BufferKind, Launch, Schedule};
use kiln_compiler::Compiled;
use kiln_ir::{Bindings, DType, Dim, DimError, Graph, Op, ReduceOp, Tensor, TensorType};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Why a CPU executable could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
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

/// Options of a CPU executable.
#[derive(Clone, Debug, Default)]
pub struct CpuOptions {
    /// Worker threads (0: one per available core).
    pub threads: usize,
}

/// Bytes behind an empty buffer's stand-in: more than the largest quantized block (Q8_K,
/// 292 bytes), which a clamped dequantizing load reads whole.
const EMPTY_STAND_IN_BYTES: usize = 512;

/// A launch split across threads only when it runs at least this many innermost iterations.
const MIN_PARALLEL_WORK: u64 = 16 * 1024;

/// A compiled graph ready to run on the CPU.
pub struct CpuExecutable {
    schedule: Schedule,
    plan: MemoryPlan,
    kernels: Vec<Arc<JitKernel>>,
    /// Per kernel: its split form when it is a matmul the micro-kernels can run.
    gemms: Vec<Option<GemmKernel>>,
    /// False: every kernel runs as its one generated function (see
    /// [`CpuExecutable::use_microkernels`]).
    microkernels: bool,
    /// Few-row products with block-quantized weights quantize their activations to 8 bits
    /// (see [`CpuExecutable::quantize_activations`]).
    q8_activations: bool,
    team: std::sync::Arc<super::team::Team>,
    /// Params, constants and load-time results, by buffer.
    weights: HashMap<BufferId, Weight>,
    /// True once load-time kernels ran on the current weights.
    derived_ready: bool,
    /// Current state values: bytes and shape.
    states: HashMap<String, (AlignedBytes, Vec<usize>)>,
    arena: AlignedBytes,
    /// Inputs, params and states the graph declares but no kernel reads (the schedule has
    /// no buffer for them): values given for them are ignored, as the interpreter does.
    unused: Vec<(&'static str, String, TensorType)>,
    /// Conditions on the symbol values, checked before every run ([`bounds`]).
    bounds: Vec<Bound>,
    /// Per-kernel timings when `KILN_PROFILE=1` ([`super::profile`]).
    profile: Option<Profile>,
}

/// A weight's bytes: owned, or shared with a (memory-mapped) file. Kernels never write
/// params; only load-time results (owned) are written.
enum Weight {
    Owned(AlignedBytes),
    Shared(WeightBytes),
}

impl Weight {
    fn as_slice(&self) -> &[u8] {
        match self {
            Weight::Owned(a) => a.as_slice(),
            Weight::Shared(w) => w.as_slice(),
        }
    }

    /// Address and length for generated code.
    fn ptr_len(&mut self) -> (*mut u8, usize) {
        match self {
            Weight::Owned(a) => (a.as_mut_ptr(), a.len()),
            // Read-only: params are kernel inputs only.
            Weight::Shared(w) => (w.as_slice().as_ptr().cast_mut(), w.as_slice().len()),
        }
    }
}

/// Raw pointers handed to worker threads (the buffers outlive the parallel section, and
/// chunks write disjoint elements).
#[derive(Clone, Copy)]
struct SendPtr<T>(*const T);
// SAFETY: see the type's docs; generated kernels only touch their chunk's elements.
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SendPtr<T> {}

impl CpuExecutable {
    /// JIT-compiles every kernel of `compiled` (through the process-wide code cache) and
    /// prepares its constants.
    pub fn new(compiled: &Compiled, options: &CpuOptions) -> Result<CpuExecutable, CpuError> {
        let kernels = compile_kernels(&compiled.schedule.kernels)?;
        let plans: Vec<_> = compiled.schedule.kernels.iter().map(plan_matmul).collect();
        let derived: Vec<_> = plans.iter().flatten().flat_map(derived_kernels).collect();
        let mut derived = compile_kernels(&derived)?.into_iter();
        let gemms = plans
            .into_iter()
            .map(|p| p.map(|p| GemmKernel::new(p, &mut derived)))
            .collect();
        let threads = if options.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            options.threads
        };
        let team = super::team::Team::get(threads).map_err(|e| CpuError::Threads(e.to_string()))?;
        let mut weights = HashMap::new();
        for b in &compiled.schedule.buffers {
            if let BufferKind::Constant(t) = &b.kind {
                weights.insert(
                    b.id,
                    Weight::Owned(AlignedBytes::from_slice(&tensor_bytes(t))),
                );
            }
        }
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
        Ok(CpuExecutable {
            schedule: compiled.schedule.clone(),
            plan: compiled.memory.clone(),
            kernels,
            gemms,
            microkernels: true,
            q8_activations: false,
            team,
            weights,
            derived_ready: false,
            states: HashMap::new(),
            arena: AlignedBytes::default(),
            unused,
            bounds: bounds(&compiled.graph),
            profile: switches::profile().then(|| {
                let names: Vec<String> = compiled
                    .schedule
                    .kernels
                    .iter()
                    .map(|k| format!("{} ({:?})", k.name, k.kind))
                    .collect();
                Profile::new(format!("a graph of {} kernels", names.len()), names)
            }),
        })
    }

    /// Names this executable in its `KILN_PROFILE=1` report (printed when it is dropped).
    pub fn set_profile_label(&mut self, label: &str) {
        if let Some(p) = &mut self.profile {
            p.set_label(label);
        }
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.team.threads()
    }

    /// Whether matmul kernels run split around the micro-kernels (the default) or as one
    /// generated function each, which accumulates in f64 exactly like the interpreter
    /// (slower; for debugging and for comparing with ahead-of-time code).
    pub fn use_microkernels(&mut self, on: bool) {
        self.microkernels = on;
    }

    /// Off (the default): products of few activation rows (decode) with block-quantized
    /// weights multiply the f32 activations with the weight blocks, exact to f32 rounding.
    /// On: they quantize each activation row to 8 bits per block once and use integer dot
    /// products, as llama.cpp does (about 0.4% RMS error per product; SmolLM2 decode
    /// 1.4-1.5x faster on a Zen 1 host at 1 and 2 threads). Many-row products (prefill)
    /// always multiply in f32. `KILN_Q8_ACTIVATIONS=1`/`=0` overrides this for every
    /// executable.
    pub fn quantize_activations(&mut self, on: bool) {
        self.q8_activations = on;
    }

    /// Whether few-row quantized products run on 8-bit activations (this executable's
    /// choice, or the environment's override).
    pub fn quantizes_activations(&self) -> bool {
        super::switches::q8_activations_override().unwrap_or(self.q8_activations)
    }

    /// How many kernels run as split matmuls (generated packing and epilogue around a
    /// micro-kernel) rather than as one generated function.
    pub fn split_matmuls(&self) -> usize {
        self.gemms.iter().flatten().count()
    }

    /// The schedule being run.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    fn find(&self, kind: &'static str, name: &str) -> Result<BufferId, CpuError> {
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
            .ok_or_else(|| CpuError::Unknown {
                kind,
                name: name.to_string(),
            })
    }

    /// [`Self::find`], or `None` for a source the graph declares but never reads (`t` must
    /// still have its dtype, rank and constant dims, as the interpreter checks).
    fn find_used(
        &self,
        kind: &'static str,
        name: &str,
        t: &Tensor,
    ) -> Result<Option<BufferId>, CpuError> {
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
            return Err(CpuError::Mismatch {
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
    fn check(
        &self,
        kind: &'static str,
        name: &str,
        id: BufferId,
        t: &Tensor,
        bindings: &mut Bindings,
    ) -> Result<(), CpuError> {
        let info = &self.schedule.buffers[id.0 as usize];
        let mismatch = || CpuError::Mismatch {
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

    /// Loads a weight (a `param` of the graph).
    pub fn set_param(&mut self, name: &str, t: &Tensor) -> Result<(), CpuError> {
        let Some(id) = self.find_used("param", name, t)? else {
            return Ok(());
        };
        self.check("param", name, id, t, &mut Bindings::new())?;
        self.weights.insert(
            id,
            Weight::Owned(AlignedBytes::from_slice(&tensor_bytes(t))),
        );
        self.weights_changed();
        Ok(())
    }

    /// Loads param `name` from bytes in Kiln's layout (e.g. a memory-mapped file's),
    /// without copying them when they are aligned for their dtype.
    pub fn set_param_bytes(&mut self, name: &str, weight: &WeightTensor) -> Result<(), CpuError> {
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
                    Ok(())
                } else {
                    Err(CpuError::Mismatch {
                        kind: "param",
                        name: name.to_string(),
                        expected: format!("{}{}", ty.dtype, ty.shape),
                        got: format!("{}{:?}", weight.dtype, weight.shape),
                    })
                };
            }
        };
        let info = &self.schedule.buffers[id.0 as usize];
        let mismatch = || CpuError::Mismatch {
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
        let bytes = weight.bytes.as_slice();
        let align = info.dtype.size_bytes().unwrap_or(1).max(1);
        let w = if (bytes.as_ptr() as usize).is_multiple_of(align) {
            Weight::Shared(weight.bytes.clone())
        } else {
            Weight::Owned(AlignedBytes::from_slice(bytes))
        };
        self.weights.insert(id, w);
        self.weights_changed();
        Ok(())
    }

    /// After a weight changed: load-time kernels must run again and no thread may use a
    /// cached dequantized block of the old bytes.
    fn weights_changed(&mut self) {
        self.derived_ready = false;
        kiln_compiler::backend::cpu::scalar::clear_dequant_cache();
    }

    /// Exchanges every state value (KV caches) with `other`, without copying: two programs
    /// of one model (prompt and decode step) hand their caches to each other.
    pub fn swap_states(&mut self, other: &mut CpuExecutable) {
        std::mem::swap(&mut self.states, &mut other.states);
    }

    /// Sets a state's value (e.g. an empty KV cache before the first step).
    pub fn set_state(&mut self, name: &str, t: &Tensor) -> Result<(), CpuError> {
        let Some(id) = self.find_used("state", name, t)? else {
            return Ok(());
        };
        self.check("state", name, id, t, &mut Bindings::new())?;
        self.states.insert(
            name.to_string(),
            (
                AlignedBytes::from_slice(&tensor_bytes(t)),
                t.shape().to_vec(),
            ),
        );
        Ok(())
    }

    /// A state's current value.
    pub fn state(&self, name: &str) -> Option<Tensor> {
        let id = self.find("state", name).ok()?;
        let (bytes, shape) = self.states.get(name)?;
        tensor_from_bytes(
            self.schedule.buffers[id.0 as usize].dtype,
            shape.clone(),
            bytes.as_slice(),
        )
    }

    /// Runs the graph on `inputs` with `bindings` (symbols not bound are inferred from the
    /// shapes of inputs and states); returns the outputs by name and updates the states.
    /// A state updated in place ([`Schedule::updated_in_place`], a KV-cache write) keeps its
    /// storage and is written by the kernels; if a run fails after its kernels started, such
    /// a state may hold the new slice already (positions a KV cache does not read yet).
    pub fn run(
        &mut self,
        inputs: &[(&str, &Tensor)],
        bindings: &Bindings,
    ) -> Result<Vec<(String, Tensor)>, CpuError> {
        let mut b = bindings.clone();
        let mut input_bufs: HashMap<BufferId, AlignedBytes> = HashMap::new();
        for (name, t) in inputs {
            let Some(id) = self.find_used("input", name, t)? else {
                continue;
            };
            self.check("input", name, id, t, &mut b)?;
            input_bufs.insert(id, AlignedBytes::from_slice(&tensor_bytes(t)));
        }
        for info in &self.schedule.buffers {
            match &info.kind {
                BufferKind::Input(n) if !input_bufs.contains_key(&info.id) => {
                    return Err(CpuError::Missing {
                        kind: "input",
                        name: n.clone(),
                    })
                }
                BufferKind::State(n) => {
                    let Some((_, shape)) = self.states.get(n) else {
                        return Err(CpuError::Missing {
                            kind: "state",
                            name: n.clone(),
                        });
                    };
                    for (d, &v) in info.shape.dims().iter().zip(shape) {
                        if let Some(sym) = d.as_symbol() {
                            if b.get(sym).is_none() {
                                b.set(sym, v as i64);
                            }
                        }
                    }
                }
                BufferKind::Param(n) if !self.weights.contains_key(&info.id) => {
                    return Err(CpuError::Missing {
                        kind: "param",
                        name: n.clone(),
                    })
                }
                _ => {}
            }
        }
        // Every symbol has its value now: check the dims that could not be checked while
        // symbols were still being bound (an input `[2*n]` given before the one binding `n`;
        // a state's dims against explicit bindings).
        for (name, t) in inputs {
            if let Some(id) = self.find_used("input", name, t)? {
                self.check("input", name, id, t, &mut b)?;
            }
        }
        for info in &self.schedule.buffers {
            let BufferKind::State(name) = &info.kind else {
                continue;
            };
            let Some((_, shape)) = self.states.get(name) else {
                continue;
            };
            let dims = info.shape.dims().iter().zip(shape);
            if dims
                .into_iter()
                .any(|(d, &v)| d.eval(&b).is_ok_and(|x| x != v as i64))
            {
                return Err(CpuError::Mismatch {
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
                return Err(CpuError::Bounds {
                    what: c.what.clone(),
                    condition: format!("{} <= {}", c.lo, c.hi),
                    lo,
                    hi,
                });
            }
        }
        // Inputs (and states) were copied into fresh buffers, which may sit at the address of
        // an earlier run's buffer: forget every thread's cached dequantized block, or a
        // quantized input could be read as the previous run's values.
        kiln_compiler::backend::cpu::scalar::clear_dequant_cache();
        if !self.derived_ready {
            self.run_load_time()?;
        }
        // Outputs (and new state values) get fresh buffers; intermediates live in the arena.
        let mut outputs: HashMap<BufferId, AlignedBytes> = HashMap::new();
        for info in &self.schedule.buffers {
            if info.kind == BufferKind::Output {
                let n = bytes_of(info.dtype, &info.size, &b)?;
                outputs.insert(info.id, AlignedBytes::zeroed(n));
            }
        }
        let resolved = self.plan.resolve(&b)?;
        self.arena.reserve_len(resolved.arena_bytes as usize);
        let arena = self.arena.as_mut_ptr();
        let mut ptrs: Vec<(*mut u8, usize)> =
            vec![(std::ptr::null_mut(), 0); self.schedule.buffers.len()];
        for (id, off, size) in &resolved.arena_buffers {
            // SAFETY: the plan keeps every arena buffer inside `arena_bytes`.
            ptrs[id.0] = (unsafe { arena.add(*off as usize) }, *size as usize);
        }
        let mut scratch: HashMap<BufferId, AlignedBytes> = HashMap::new();
        for info in &self.schedule.buffers {
            let slot = &mut ptrs[info.id.0 as usize];
            let ext = match &info.kind {
                BufferKind::Input(_) => input_bufs.get_mut(&info.id),
                BufferKind::Output => outputs.get_mut(&info.id),
                BufferKind::Param(_) | BufferKind::Constant(_) | BufferKind::Derived => {
                    if let Some(w) = self.weights.get_mut(&info.id) {
                        *slot = w.ptr_len();
                        continue;
                    }
                    None
                }
                BufferKind::State(n) => self.states.get_mut(n).map(|(bytes, _)| bytes),
                BufferKind::Intermediate | BufferKind::Scratch => None,
            };
            if let Some(bytes) = ext {
                *slot = (bytes.as_mut_ptr(), bytes.len());
            } else if slot.0.is_null() {
                // An intermediate the plan left out (unused) or scratch: own storage.
                let n = bytes_of(info.dtype, &info.size, &b)?;
                let s = scratch
                    .entry(info.id)
                    .or_insert_with(|| AlignedBytes::zeroed(n));
                *slot = (s.as_mut_ptr(), s.len());
            }
        }
        // Parallel launches split across the team here; its workers spin between them.
        let ptrs = &ptrs[..];
        for launch in &self.schedule.launches {
            match &self.profile {
                Some(p) => p.time(launch.kernel, || self.launch(launch, ptrs, &b))?,
                None => self.launch(launch, ptrs, &b)?,
            }
        }
        let mut result = Vec::new();
        for (name, id) in &self.schedule.outputs {
            result.push((name.clone(), self.fetch(*id, &outputs, &b)?));
        }
        for (name, id) in &self.schedule.state_updates.clone() {
            let info = &self.schedule.buffers[id.0 as usize];
            if self.schedule.updated_in_place(name) {
                // Updated in place (a KV-cache write): the kernels wrote the state's bytes.
                continue;
            }
            let shape = eval_shape(&info.shape, &b)?;
            let bytes = match outputs.remove(id) {
                Some(bytes) => bytes,
                None => AlignedBytes::from_slice(&tensor_bytes(&self.fetch(*id, &outputs, &b)?)),
            };
            self.states.insert(name.clone(), (bytes, shape));
        }
        Ok(result)
    }

    fn fetch(
        &self,
        id: BufferId,
        outputs: &HashMap<BufferId, AlignedBytes>,
        b: &Bindings,
    ) -> Result<Tensor, CpuError> {
        let info = &self.schedule.buffers[id.0 as usize];
        let shape = eval_shape(&info.shape, b)?;
        let bytes = match &info.kind {
            BufferKind::Output => outputs.get(&id).map(|x| x.as_slice()),
            BufferKind::State(n) => self.states.get(n).map(|(x, _)| x.as_slice()),
            _ => self.weights.get(&id).map(|x| x.as_slice()),
        };
        bytes
            .and_then(|bytes| tensor_from_bytes(info.dtype, shape.clone(), bytes))
            .ok_or_else(|| CpuError::Mismatch {
                kind: "output",
                name: format!("b{}", id.0),
                expected: format!("{}{:?}", info.dtype, shape),
                got: "a buffer of another size".into(),
            })
    }

    /// Runs the load-time kernels (params to derived weights), once per set of weights.
    fn run_load_time(&mut self) -> Result<(), CpuError> {
        let b = Bindings::new();
        for info in &self.schedule.buffers {
            if info.kind == BufferKind::Derived && !self.weights.contains_key(&info.id) {
                let n = bytes_of(info.dtype, &info.size, &b)?;
                self.weights
                    .insert(info.id, Weight::Owned(AlignedBytes::zeroed(n)));
            }
        }
        let mut ptrs: Vec<(*mut u8, usize)> =
            vec![(std::ptr::null_mut(), 0); self.schedule.buffers.len()];
        for (id, w) in self.weights.iter_mut() {
            ptrs[id.0 as usize] = w.ptr_len();
        }
        for launch in &self.schedule.load_time {
            self.launch(launch, &ptrs, &b)?;
        }
        self.derived_ready = true;
        Ok(())
    }

    fn launch(
        &self,
        launch: &Launch,
        ptrs: &[(*mut u8, usize)],
        b: &Bindings,
    ) -> Result<(), CpuError> {
        let kernel = &self.schedule.kernels[launch.kernel];
        let jit = &self.kernels[launch.kernel];
        let mut args: Vec<*mut u8> = Vec::with_capacity(kernel.params.len());
        // An empty buffer may have no storage behind its address (an empty arena is a
        // dangling pointer), yet a kernel still touches element 0 of it when a
        // data-dependent index is out of range (clamped and flagged): it gets a zeroed
        // stand-in, large enough for any element or quantized block, for this launch.
        let mut stand_in: Option<AlignedBytes> = None;
        for p in &kernel.params {
            let (ptr, have) = ptrs[p.id.0 as usize];
            let need = bytes_of(p.dtype, &p.len, b)?;
            if ptr.is_null() || have < need {
                return Err(CpuError::BufferTooSmall {
                    kernel: kernel.name.clone(),
                    buffer: p.id.0,
                    have: if ptr.is_null() { 0 } else { have },
                    need,
                });
            }
            let ptr = if have == 0 {
                stand_in
                    .get_or_insert_with(|| AlignedBytes::zeroed(EMPTY_STAND_IN_BYTES))
                    .as_mut_ptr()
            } else {
                ptr
            };
            args.push(ptr);
        }
        let syms = kernel
            .symbols
            .iter()
            .map(|s| b.get(s).map_or_else(|| Dim::symbol(s).eval(b), Ok))
            .collect::<Result<Vec<i64>, _>>()?;
        if let Some(g) = self.gemms[launch.kernel]
            .as_ref()
            .filter(|_| self.microkernels)
        {
            let with_len: Vec<(*mut u8, usize)> = args.iter().map(|&p| (p, 0)).collect();
            let q8 = self.quantizes_activations();
            return run_gemm(g, kernel, &with_len, &syms, b, &self.team, q8).map_err(|e| match e {
                GemmError::Dim(d) => CpuError::Dim(d),
                GemmError::Index => CpuError::IndexOutOfRange {
                    kernel: kernel.name.clone(),
                },
            });
        }
        let total = match &jit.parallel {
            Some(d) => d.eval(b)?.max(0),
            None => 1,
        };
        let threads = self.team.threads() as i64;
        let chunks = if jit.parallel.is_some()
            && threads > 1
            && (total as u64).saturating_mul(work_per_item(kernel, b)) >= MIN_PARALLEL_WORK
        {
            threads.min(total)
        } else {
            1
        };
        let entry = jit.entry;
        let (a, s) = (SendPtr(args.as_ptr()), SendPtr(syms.as_ptr()));
        let team = (chunks > 1).then_some(&*self.team);
        let Ok(status) = max_over::<std::convert::Infallible>(team, chunks as usize, &|c| {
            let c = c as i64;
            let (lo, hi) = (total * c / chunks, total * (c + 1) / chunks);
            let mut status = 0i64;
            let (a, s) = (a, s);
            // SAFETY: `args` hold buffers at least as large as the kernel's parameters
            // declare, `syms` its symbols in order (the ABI is `KernelFn`'s); chunks cover
            // disjoint ranges of the parallel nest, whose iterations write disjoint elements.
            unsafe { entry(a.0, s.0, lo, hi, &mut status) };
            Ok(status)
        });
        if status != 0 {
            return Err(CpuError::IndexOutOfRange {
                kernel: kernel.name.clone(),
            });
        }
        Ok(())
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
fn bytes_of(dtype: DType, elements: &Dim, b: &Bindings) -> Result<usize, CpuError> {
    let n = elements.eval(b)?.max(0) as usize;
    Ok(match dtype {
        DType::Quant(q) => n.div_ceil(q.block_size()) * q.block_bytes(),
        d => n * d.size_bytes().unwrap_or(1),
    })
}

fn eval_shape(shape: &kiln_ir::Shape, b: &Bindings) -> Result<Vec<usize>, CpuError> {
    Ok(shape
        .dims()
        .iter()
        .map(|d| d.eval(b).map(|v| v.max(0) as usize))
        .collect::<Result<Vec<_>, _>>()?)
}
