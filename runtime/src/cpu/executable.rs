//! Runs a compiled graph on the CPU: JIT-compiled kernels, weights loaded once, one arena for
//! the intermediates (the memory plan's offsets, resolved per set of symbol values),
//! persistent state buffers, and parallel loops split across a team of spinning threads
//! (`team.rs`).

use super::bytes::{tensor_bytes, tensor_from_bytes, AlignedBytes};
use super::gemm::{derived_kernels, run_gemm, GemmError, GemmKernel};
use super::switches;
use super::team::max_over;
use crate::profile::Profile;
use crate::program::{bytes_of, eval_shape, Program};
use crate::weights::{WeightBytes, WeightTensor};
use kiln_compiler::backend::cpu::matmul::plan_matmul;
use kiln_compiler::backend::cpu::parallel::work_per_item;
use kiln_compiler::backend::cpu::{compile_kernels, JitKernel};
use kiln_compiler::loop_ir::BufferId;
use kiln_compiler::memory::MemoryPlan;
use kiln_compiler::schedule::{BufferKind, Launch, Schedule};
use kiln_compiler::Compiled;
use kiln_ir::{Bindings, Dim, Tensor};
use std::collections::HashMap;
use std::sync::Arc;

/// Why a CPU executable could not be built or run (the error of every device).
pub type CpuError = crate::program::ExecError;

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
    program: Program,
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
        Ok(CpuExecutable {
            program: Program::new(compiled),
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
        &self.program.schedule
    }

    /// Loads a weight (a `param` of the graph).
    pub fn set_param(&mut self, name: &str, t: &Tensor) -> Result<(), CpuError> {
        let Some(id) = self.program.source_buffer("param", name, t)? else {
            return Ok(());
        };
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
        let Some(id) = self.program.weight_buffer(name, weight)? else {
            return Ok(());
        };
        let info = &self.program.schedule.buffers[id.0 as usize];
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
        if self.program.source_buffer("state", name, t)?.is_none() {
            return Ok(());
        }
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
        let id = self.program.find("state", name).ok()?;
        let (bytes, shape) = self.states.get(name)?;
        tensor_from_bytes(
            self.program.schedule.buffers[id.0 as usize].dtype,
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
        let states = &self.states;
        let weights = &self.weights;
        let (b, used) = self.program.bind_run(
            inputs,
            bindings,
            &|n| states.get(n).map(|(_, shape)| shape.clone()),
            &|id| weights.contains_key(&id),
        )?;
        let mut input_bufs: HashMap<BufferId, AlignedBytes> = used
            .into_iter()
            .map(|(id, t)| (id, AlignedBytes::from_slice(&tensor_bytes(t))))
            .collect();
        kiln_compiler::backend::cpu::scalar::clear_dequant_cache();
        if !self.derived_ready {
            self.run_load_time()?;
        }
        // Outputs (and new state values) get fresh buffers; intermediates live in the arena.
        let mut outputs: HashMap<BufferId, AlignedBytes> = HashMap::new();
        for info in &self.program.schedule.buffers {
            if info.kind == BufferKind::Output {
                let n = bytes_of(info.dtype, &info.size, &b)?;
                outputs.insert(info.id, AlignedBytes::zeroed(n));
            }
        }
        let resolved = self.plan.resolve(&b)?;
        self.arena.reserve_len(resolved.arena_bytes as usize);
        let arena = self.arena.as_mut_ptr();
        let mut ptrs: Vec<(*mut u8, usize)> =
            vec![(std::ptr::null_mut(), 0); self.program.schedule.buffers.len()];
        for (id, off, size) in &resolved.arena_buffers {
            // SAFETY: the plan keeps every arena buffer inside `arena_bytes`.
            ptrs[id.0] = (unsafe { arena.add(*off as usize) }, *size as usize);
        }
        let mut scratch: HashMap<BufferId, AlignedBytes> = HashMap::new();
        for info in &self.program.schedule.buffers {
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
        for launch in &self.program.schedule.launches {
            match &self.profile {
                Some(p) => p.time(launch.kernel, || self.launch(launch, ptrs, &b))?,
                None => self.launch(launch, ptrs, &b)?,
            }
        }
        let mut result = Vec::new();
        for (name, id) in &self.program.schedule.outputs {
            result.push((name.clone(), self.fetch(*id, &outputs, &b)?));
        }
        for (name, id) in &self.program.schedule.state_updates.clone() {
            let info = &self.program.schedule.buffers[id.0 as usize];
            if self.program.schedule.updated_in_place(name) {
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
        let info = &self.program.schedule.buffers[id.0 as usize];
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
        for info in &self.program.schedule.buffers {
            if info.kind == BufferKind::Derived && !self.weights.contains_key(&info.id) {
                let n = bytes_of(info.dtype, &info.size, &b)?;
                self.weights
                    .insert(info.id, Weight::Owned(AlignedBytes::zeroed(n)));
            }
        }
        let mut ptrs: Vec<(*mut u8, usize)> =
            vec![(std::ptr::null_mut(), 0); self.program.schedule.buffers.len()];
        for (id, w) in self.weights.iter_mut() {
            ptrs[id.0 as usize] = w.ptr_len();
        }
        for launch in &self.program.schedule.load_time {
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
        let kernel = &self.program.schedule.kernels[launch.kernel];
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
