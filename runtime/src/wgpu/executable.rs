//! Runs a compiled graph on a wgpu device: every kernel compiled to WGSL once, weights uploaded
//! once (shared between the programs of a model), one arena buffer for the intermediates laid
//! out by the memory plan (each kernel binds it whole and finds its buffers at word offsets
//! passed in its uniform), persistent state buffers (KV caches) updated in place, and each run
//! recorded as one command buffer with one compute pass: one submission, then one download of
//! the outputs.

use super::device::{GpuBuffer, Pipeline, WgpuDevice};
use crate::cpu::{tensor_bytes, tensor_from_bytes};
use crate::profile::Profile;
use crate::program::{bytes_of, eval_shape, ExecError, Program};
use crate::weights::WeightTensor;
use kiln_compiler::backend::wgsl::{compile_kernel, Layout, MetaSlot, WgslKernel};
use kiln_compiler::loop_ir::BufferId;
use kiln_compiler::memory::{MemoryPlan, Placement};
use kiln_compiler::schedule::{BufferKind, Launch, Schedule};
use kiln_compiler::Compiled;
use kiln_ir::{Bindings, Dim, Tensor};
use std::collections::HashMap;
use std::sync::Arc;

/// Most workgroups along one dispatch axis (WebGPU's guaranteed limit).
const MAX_GROUPS_PER_AXIS: u64 = 65535;

/// A compiled graph ready to run on a wgpu device.
pub struct WgpuExecutable {
    program: Program,
    plan: MemoryPlan,
    device: Arc<WgpuDevice>,
    kernels: Vec<(WgslKernel, Arc<Pipeline>)>,
    /// Params, constants and load-time results.
    weights: HashMap<BufferId, Arc<GpuBuffer>>,
    derived_ready: bool,
    /// Current state values and their shapes.
    states: HashMap<String, (Arc<GpuBuffer>, Vec<usize>)>,
    /// Inputs, outputs and buffers outside the arena, kept between runs while big enough.
    io: HashMap<BufferId, Arc<GpuBuffer>>,
    arena: Option<Arc<GpuBuffer>>,
    /// One status word per launch (per-run, then load-time; see `WgslKernel::status`).
    status: Arc<GpuBuffer>,
    /// Zeros the status buffer is reset with before each run.
    status_zeros: Vec<u8>,
    uniform: Option<(wgpu::Buffer, u64, u64)>,
    /// Per launch (per-run launches, then load-time ones): the buffer ids bound and the group.
    groups: Vec<Option<(Vec<u64>, wgpu::BindGroup)>>,
    /// Per-kernel timings when `KILN_PROFILE=1` (each launch then submitted alone).
    profile: Option<Profile>,
}

/// Bytes between two launches' uniform values.
fn uniform_stride(d: &WgpuDevice, k: &WgslKernel) -> u64 {
    let align = d.limits.min_uniform_buffer_offset_alignment.max(16) as u64;
    ((k.meta.len().div_ceil(4).max(1) * 16) as u64).next_multiple_of(align)
}

impl WgpuExecutable {
    /// Compiles every kernel of `compiled` to WGSL (validated by naga) and builds its pipeline
    /// on `device`; uploads the graph's constants.
    pub fn new(compiled: &Compiled, device: Arc<WgpuDevice>) -> Result<WgpuExecutable, ExecError> {
        let s = &compiled.schedule;
        let arena: Vec<BufferId> = compiled
            .memory
            .buffers()
            .iter()
            .filter(|b| matches!(b.placement, Placement::Arena { .. }))
            .map(|b| BufferId(b.decl.id.0 as u32))
            .collect();
        let layout = Layout {
            shared: vec![arena],
        };
        let mut kernels = Vec::new();
        for k in &s.kernels {
            let w = compile_kernel(k, &layout, device.target)?;
            if std::env::var_os("KILN_DUMP_WGSL").is_some() {
                eprintln!("{k}\n{}", w.source);
            }
            let p = device.pipeline(&w)?;
            kernels.push((w, p));
        }
        let mut weights = HashMap::new();
        for b in &s.buffers {
            if let BufferKind::Constant(t) = &b.kind {
                let label = format!("constant b{}", b.id.0);
                weights.insert(b.id, device.upload(&tensor_bytes(t), &label)?);
            }
        }
        let profile = crate::cpu::profile_switch().then(|| {
            let names = s
                .kernels
                .iter()
                .map(|k| format!("{} ({:?})", k.name, k.kind))
                .collect();
            Profile::new(
                format!("a wgpu graph of {} kernels", s.kernels.len()),
                names,
            )
        });
        let words = (s.launches.len() + s.load_time.len()).max(1);
        let status = device.buffer(4 * words as u64, "status")?;
        Ok(WgpuExecutable {
            status_zeros: vec![0; status.size as usize],
            status,
            profile,
            program: Program::new(compiled),
            plan: compiled.memory.clone(),
            groups: (0..s.launches.len() + s.load_time.len())
                .map(|_| None)
                .collect(),
            device,
            kernels,
            weights,
            derived_ready: false,
            states: HashMap::new(),
            io: HashMap::new(),
            arena: None,
            uniform: None,
        })
    }

    /// The device it runs on.
    pub fn device(&self) -> &Arc<WgpuDevice> {
        &self.device
    }

    /// The schedule being run.
    pub fn schedule(&self) -> &Schedule {
        &self.program.schedule
    }

    /// The WGSL of every kernel, in schedule order.
    pub fn kernels(&self) -> impl Iterator<Item = &WgslKernel> {
        self.kernels.iter().map(|(k, _)| k)
    }

    /// Loads a weight (a `param` of the graph).
    pub fn set_param(&mut self, name: &str, t: &Tensor) -> Result<(), ExecError> {
        let Some(id) = self.program.source_buffer("param", name, t)? else {
            return Ok(());
        };
        let b = self
            .device
            .upload(&tensor_bytes(t), &format!("param {name}"))?;
        self.weights.insert(id, b);
        self.derived_ready = false;
        Ok(())
    }

    /// Loads param `name` from bytes in Kiln's layout (e.g. a memory-mapped file's); the
    /// device buffer is shared with every executable loading the same bytes.
    pub fn set_param_bytes(&mut self, name: &str, weight: &WeightTensor) -> Result<(), ExecError> {
        let Some(id) = self.program.weight_buffer(name, weight)? else {
            return Ok(());
        };
        let b = self
            .device
            .weight(weight.bytes.as_slice(), &format!("param {name}"))?;
        self.weights.insert(id, b);
        self.derived_ready = false;
        Ok(())
    }

    /// Exchanges every state value (KV caches) with `other` (of the same device), without
    /// copying.
    pub fn swap_states(&mut self, other: &mut WgpuExecutable) {
        std::mem::swap(&mut self.states, &mut other.states);
    }

    /// Sets a state's value (uploaded).
    pub fn set_state(&mut self, name: &str, t: &Tensor) -> Result<(), ExecError> {
        if self.program.source_buffer("state", name, t)?.is_none() {
            return Ok(());
        }
        let b = self
            .device
            .upload(&tensor_bytes(t), &format!("state {name}"))?;
        self.states
            .insert(name.to_string(), (b, t.shape().to_vec()));
        Ok(())
    }

    /// A state's current value (downloaded).
    pub fn state(&self, name: &str) -> Option<Tensor> {
        let id = self.program.find("state", name).ok()?;
        let (buf, shape) = self.states.get(name)?;
        let info = &self.program.schedule.buffers[id.0 as usize];
        let n: usize = shape.iter().product();
        let len = bytes_of(info.dtype, &Dim::from(n as i64), &Bindings::new()).ok()?;
        let bytes = self.device.download(&[(buf, len as u64)]).ok()?;
        tensor_from_bytes(info.dtype, shape.clone(), &bytes[0])
    }

    /// Runs the graph on `inputs` with `bindings` (symbols not bound are inferred from the
    /// shapes of inputs and states); returns the outputs by name and updates the states.
    pub fn run(
        &mut self,
        inputs: &[(&str, &Tensor)],
        bindings: &Bindings,
    ) -> Result<Vec<(String, Tensor)>, ExecError> {
        let states = &self.states;
        let weights = &self.weights;
        let (b, used) = self.program.bind_run(
            inputs,
            bindings,
            &|n| states.get(n).map(|(_, shape)| shape.clone()),
            &|id| weights.contains_key(&id),
        )?;
        self.device.write(&self.status, &self.status_zeros);
        if !self.derived_ready {
            self.run_load_time()?;
        }
        let resolved = self.plan.resolve(&b)?;
        let arena_needed = resolved.arena_bytes.max(16);
        if self.arena.as_ref().is_none_or(|a| a.size < arena_needed) {
            self.arena = Some(self.device.buffer(arena_needed, "arena")?);
        }
        let mut offsets: HashMap<BufferId, u64> = HashMap::new();
        for (id, off, _) in &resolved.arena_buffers {
            offsets.insert(BufferId(id.0 as u32), off / 4);
        }
        for (id, t) in &used {
            let bytes = tensor_bytes(t);
            let buf = self.io_buffer(*id, bytes.len() as u64)?;
            self.device.write(&buf, &bytes);
        }
        // Outputs and buffers the plan leaves out of the arena get buffers of their own.
        let mut own = Vec::new();
        for info in &self.program.schedule.buffers {
            let kind = &info.kind;
            if matches!(
                kind,
                BufferKind::Output | BufferKind::Intermediate | BufferKind::Scratch
            ) && !offsets.contains_key(&info.id)
            {
                own.push((info.id, self.size_of(info.id, &b)?));
            }
        }
        for (id, n) in own {
            self.io_buffer(id, n)?;
        }
        self.record(Phase::Run, &b, &offsets)?;
        let mut refs: Vec<(&GpuBuffer, u64)> = Vec::new();
        for (_, id) in &self.program.schedule.outputs {
            refs.push((self.buffer_ref(*id)?, self.size_of(*id, &b)?));
        }
        refs.push((&self.status, self.status.size));
        let mut data = self.device.download(&refs)?;
        let status = data.pop().unwrap_or_default();
        self.check_status(&status)?;
        let mut result = Vec::new();
        for ((name, id), bytes) in self.program.schedule.outputs.iter().zip(&data) {
            let info = &self.program.schedule.buffers[id.0 as usize];
            let shape = eval_shape(&info.shape, &b)?;
            let t = tensor_from_bytes(info.dtype, shape.clone(), bytes).ok_or_else(|| {
                ExecError::Mismatch {
                    kind: "output",
                    name: name.clone(),
                    expected: format!("{}{:?}", info.dtype, shape),
                    got: "a buffer of another size".into(),
                }
            })?;
            result.push((name.clone(), t));
        }
        // A state not updated in place takes its update's buffer as its new value.
        for i in 0..self.program.schedule.state_updates.len() {
            let (name, id) = &self.program.schedule.state_updates[i];
            if self.program.schedule.updated_in_place(name) {
                continue;
            }
            let (name, id) = (name.clone(), *id);
            let info = &self.program.schedule.buffers[id.0 as usize];
            let shape = eval_shape(&info.shape, &b)?;
            let buf = match self.io.remove(&id) {
                Some(buf) => buf,
                None => {
                    let src = self.buffer_ref(id)?;
                    let n = self.size_of(id, &b)?;
                    let copy = self.device.buffer(n, &format!("state {name}"))?;
                    let mut enc = self
                        .device
                        .device
                        .create_command_encoder(&Default::default());
                    enc.copy_buffer_to_buffer(
                        &src.buffer,
                        0,
                        &copy.buffer,
                        0,
                        n.next_multiple_of(4).min(src.size),
                    );
                    self.device.queue.submit([enc.finish()]);
                    copy
                }
            };
            self.states.insert(name, (buf, shape));
        }
        Ok(result)
    }

    /// The first launch whose status word is set, as an error.
    fn check_status(&self, words: &[u8]) -> Result<(), ExecError> {
        let s = &self.program.schedule;
        for (slot, w) in words.chunks_exact(4).enumerate() {
            let w = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            if w == 0 {
                continue;
            }
            let launch = s
                .launches
                .iter()
                .chain(&s.load_time)
                .nth(slot)
                .map_or(0, |l| l.kernel);
            let kernel = s.kernels[launch].name.clone();
            return Err(if w & 1 != 0 {
                ExecError::IndexOutOfRange { kernel }
            } else {
                ExecError::Int64Range { kernel }
            });
        }
        Ok(())
    }

    /// An input, output or non-arena buffer of at least `bytes`, reallocated when smaller.
    fn io_buffer(&mut self, id: BufferId, bytes: u64) -> Result<Arc<GpuBuffer>, ExecError> {
        if let Some(b) = self.io.get(&id).filter(|b| b.size >= bytes.max(16)) {
            return Ok(b.clone());
        }
        let b = self.device.buffer(bytes, &format!("b{}", id.0))?;
        self.io.insert(id, b.clone());
        Ok(b)
    }

    /// Bytes of buffer `id` with the symbols bound to `b`.
    fn size_of(&self, id: BufferId, b: &Bindings) -> Result<u64, ExecError> {
        let info = &self.program.schedule.buffers[id.0 as usize];
        Ok(bytes_of(info.dtype, &info.size, b)? as u64)
    }

    /// The device buffer holding buffer `id` now (the arena for arena buffers).
    fn buffer_ref(&self, id: BufferId) -> Result<&Arc<GpuBuffer>, ExecError> {
        let info = &self.program.schedule.buffers[id.0 as usize];
        let found = match &info.kind {
            BufferKind::Param(_) | BufferKind::Constant(_) | BufferKind::Derived => {
                self.weights.get(&id)
            }
            BufferKind::State(n) => self.states.get(n).map(|(b, _)| b),
            _ => self.io.get(&id).or(self.arena.as_ref()),
        };
        found.ok_or_else(|| ExecError::Missing {
            kind: "buffer",
            name: format!("b{}", id.0),
        })
    }

    fn run_load_time(&mut self) -> Result<(), ExecError> {
        let b = Bindings::new();
        let mut missing = Vec::new();
        for info in &self.program.schedule.buffers {
            if info.kind == BufferKind::Derived && !self.weights.contains_key(&info.id) {
                missing.push((info.id, self.size_of(info.id, &b)?));
            }
        }
        for (id, n) in missing {
            let buf = self.device.buffer(n, &format!("derived b{}", id.0))?;
            self.weights.insert(id, buf);
        }
        if !self.program.schedule.load_time.is_empty() {
            if self.arena.is_none() {
                self.arena = Some(self.device.buffer(16, "arena")?);
            }
            self.record(Phase::LoadTime, &b, &HashMap::new())?;
        }
        self.derived_ready = true;
        Ok(())
    }

    /// Records the launches of `phase` into one compute pass and submits it.
    fn record(
        &mut self,
        phase: Phase,
        b: &Bindings,
        offsets: &HashMap<BufferId, u64>,
    ) -> Result<(), ExecError> {
        let s = &self.program.schedule;
        // Bind groups and status words are per launch: per-run ones first, then load-time.
        let (launches, first) = match phase {
            Phase::Run => (&s.launches, 0),
            Phase::LoadTime => (&s.load_time, s.launches.len()),
        };
        // The uniform values of every launch, each at a multiple of the offset alignment.
        let mut meta: Vec<u8> = Vec::new();
        let mut at = Vec::new();
        for l in launches {
            let (k, _) = &self.kernels[l.kernel];
            at.push(meta.len() as u64);
            for slot in &k.meta {
                let v = match slot {
                    MetaSlot::Symbol(s) => b.get(s).map_or_else(|| Dim::symbol(s).eval(b), Ok)?,
                    MetaSlot::Offset(id) => offsets.get(id).copied().unwrap_or(0) as i64,
                    MetaSlot::StatusWord => (first + at.len() - 1) as i64,
                };
                let v = i32::try_from(v).map_err(|_| {
                    ExecError::Device(format!(
                        "kernel {}: value {v} does not fit the 32-bit indices of the WGSL backend",
                        k.name
                    ))
                })?;
                meta.extend_from_slice(&v.to_le_bytes());
            }
            meta.resize(
                at[at.len() - 1] as usize + uniform_stride(&self.device, k) as usize,
                0,
            );
        }
        let need = (meta.len() as u64).max(256);
        if self
            .uniform
            .as_ref()
            .is_none_or(|(_, size, _)| *size < need)
        {
            let buffer = self.device.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kiln uniforms"),
                size: need.next_power_of_two(),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let id = NEXT_UNIFORM.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.uniform = Some((buffer, need.next_power_of_two(), id));
        }
        let (ubuf, _, uid) = self.uniform.as_ref().expect("just made");
        let uid = *uid;
        if !meta.is_empty() {
            self.device.queue.write_buffer(ubuf, 0, &meta);
        }
        // Bind groups: rebuilt when a bound buffer changed (the check allocates nothing).
        for (j, l) in launches.iter().enumerate() {
            let (k, p) = &self.kernels[l.kernel];
            if let Some((key, _)) = &self.groups[first + j] {
                let mut ids = key.iter();
                let mut same = true;
                for binding in &k.bindings {
                    same &= ids.next() == Some(&self.buffer_ref(binding.buffers[0])?.id);
                }
                if k.status {
                    same &= ids.next() == Some(&self.status.id);
                }
                if same && ids.next() == Some(&uid) && ids.next().is_none() {
                    continue;
                }
            }
            let mut bufs = Vec::new();
            for binding in &k.bindings {
                bufs.push(self.buffer_ref(binding.buffers[0])?);
            }
            if k.status {
                bufs.push(&self.status);
            }
            let mut key: Vec<u64> = bufs.iter().map(|x| x.id).collect();
            key.push(uid);
            let meta_bytes = (k.meta.len().div_ceil(4).max(1) * 16) as u64;
            let ubuf = &self.uniform.as_ref().expect("made above").0;
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: ubuf,
                    offset: 0,
                    size: std::num::NonZeroU64::new(meta_bytes),
                }),
            }];
            for (i, buf) in bufs.iter().enumerate() {
                entries.push(wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource: buf.buffer.as_entire_binding(),
                });
            }
            let group = self
                .device
                .device
                .create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(&k.name),
                    layout: &p.layout,
                    entries: &entries,
                });
            self.groups[first + j] = Some((key, group));
        }
        if let Some(p) = &self.profile {
            // One submission per launch, waited for: wall time per kernel.
            for (j, l) in launches.iter().enumerate() {
                p.time(l.kernel, || -> Result<(), ExecError> {
                    self.submit(&launches[j..j + 1], first + j, b, &at[j..j + 1])?;
                    self.device
                        .device
                        .poll(wgpu::PollType::wait_indefinitely())
                        .map_err(|e| ExecError::Device(format!("wait: {e}")))?;
                    Ok(())
                })?;
            }
            return self.device.take_error();
        }
        self.submit(launches, first, b, &at)
    }

    /// Records `launches` (bind groups from index `first`, uniform offsets `at`) into one
    /// compute pass and submits it.
    fn submit(
        &self,
        launches: &[Launch],
        first: usize,
        b: &Bindings,
        at: &[u64],
    ) -> Result<(), ExecError> {
        let mut enc = self
            .device
            .device
            .create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for (j, l) in launches.iter().enumerate() {
                let (k, p) = &self.kernels[l.kernel];
                let groups = k.workgroups.eval(b)?.max(0) as u64;
                if groups == 0 {
                    continue;
                }
                let x = groups.min(MAX_GROUPS_PER_AXIS);
                let y = groups.div_ceil(x);
                if y > MAX_GROUPS_PER_AXIS {
                    return Err(ExecError::Device(format!(
                        "kernel {} needs {groups} workgroups, more than {MAX_GROUPS_PER_AXIS}^2",
                        k.name
                    )));
                }
                let (_, group) = self.groups[first + j].as_ref().expect("made above");
                pass.set_pipeline(&p.pipeline);
                pass.set_bind_group(0, group, &[at[j] as u32]);
                pass.dispatch_workgroups(x as u32, y as u32, 1);
            }
        }
        self.device.queue.submit([enc.finish()]);
        self.device.take_error()
    }
}

static NEXT_UNIFORM: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Which launches a recording holds.
#[derive(Clone, Copy)]
enum Phase {
    /// The per-run launches.
    Run,
    /// The launches run once after the weights are loaded.
    LoadTime,
}
