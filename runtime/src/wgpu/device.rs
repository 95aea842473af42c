//! A wgpu device: adapter selection, the compute pipelines of WGSL kernels (cached by their
//! source, so programs sharing kernels build each once), weight buffers shared between the
//! executables of one model, and the device's errors turned into values.

use crate::program::ExecError;
use kiln_compiler::backend::wgsl::{Target, WgslKernel};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// A GPU buffer with an identity (bind groups are cached by the identities they bind).
pub struct GpuBuffer {
    /// The buffer (`STORAGE | COPY_SRC | COPY_DST`).
    pub buffer: wgpu::Buffer,
    /// Unique per buffer created by this process.
    pub id: u64,
    /// Bytes.
    pub size: u64,
}

/// A kernel's compute pipeline and bind group layout.
pub struct Pipeline {
    /// The pipeline.
    pub pipeline: wgpu::ComputePipeline,
    /// Its bind group layout (binding 0 the uniform with a dynamic offset, then storage).
    pub layout: wgpu::BindGroupLayout,
}

/// A wgpu adapter and device.
pub struct WgpuDevice {
    /// What the adapter says about itself.
    pub info: wgpu::AdapterInfo,
    /// The device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    /// The device's limits (the adapter's best).
    pub limits: wgpu::Limits,
    /// What kernels may use beyond core WebGPU.
    pub target: Target,
    pipelines: Mutex<HashMap<String, Arc<Pipeline>>>,
    weights: Mutex<HashMap<(usize, usize), Weak<GpuBuffer>>>,
    /// The mappable buffer downloads copy through, kept while it is large enough (one per
    /// device, not one per download: decode downloads logits every token).
    staging: Mutex<Option<wgpu::Buffer>>,
    error: Arc<Mutex<Option<String>>>,
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// Every adapter wgpu finds (Vulkan, Metal, DX12), in its order.
pub fn adapters() -> Vec<wgpu::AdapterInfo> {
    pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()))
        .iter()
        .map(|a| a.get_info())
        .collect()
}

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

impl WgpuDevice {
    /// Opens an adapter: `selector` is its index in [`adapters`] or a case-insensitive part
    /// of its name; `None` takes the best (discrete, integrated, virtual, then CPU drivers).
    pub fn new(selector: Option<&str>) -> Result<Arc<WgpuDevice>, ExecError> {
        let allow = std::env::var("KILN_WGSL_SUBGROUPS").map_or(true, |v| v != "0");
        WgpuDevice::with_subgroups(selector, allow)
    }

    /// [`WgpuDevice::new`], using subgroup operations only if `allow` (and the adapter has
    /// them): `KILN_WGSL_SUBGROUPS=0` makes `new` pass false.
    pub fn with_subgroups(
        selector: Option<&str>,
        allow: bool,
    ) -> Result<Arc<WgpuDevice>, ExecError> {
        let inst = instance();
        let all = pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()));
        let names = || {
            let v: Vec<String> = all
                .iter()
                .enumerate()
                .map(|(i, a)| format!("{i}: {} ({:?})", a.get_info().name, a.get_info().backend))
                .collect();
            if v.is_empty() {
                "none (install a Vulkan driver, e.g. mesa-vulkan-drivers)".to_string()
            } else {
                v.join(", ")
            }
        };
        let adapter = match selector.filter(|s| !s.is_empty()) {
            Some(s) => match s.parse::<usize>() {
                Ok(i) => all.get(i),
                Err(_) => all
                    .iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&s.to_lowercase())),
            }
            .ok_or_else(|| ExecError::Device(format!("no adapter `{s}`; adapters: {}", names())))?,
            None => all
                .iter()
                .min_by_key(|a| rank(a.get_info().device_type))
                .ok_or_else(|| ExecError::Device(format!("no adapter; adapters: {}", names())))?,
        };
        let limits = adapter.limits();
        let subgroups = allow && adapter.features().contains(wgpu::Features::SUBGROUP);
        let features = if subgroups {
            wgpu::Features::SUBGROUP
        } else {
            wgpu::Features::empty()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("kiln"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: Default::default(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: Default::default(),
        }))
        .map_err(|e| ExecError::Device(format!("request device: {e}")))?;
        let error: Arc<Mutex<Option<String>>> = Arc::default();
        let sink = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| e.to_string());
        }));
        Ok(Arc::new(WgpuDevice {
            info: adapter.get_info(),
            device,
            queue,
            limits,
            target: Target { subgroups },
            pipelines: Mutex::default(),
            weights: Mutex::default(),
            staging: Mutex::default(),
            error,
        }))
    }

    /// The device for `selector` (as [`WgpuDevice::new`] takes it), opened once per process
    /// and selector: executables that exchange states or share weights (a model's prompt and
    /// step programs) must be on one device.
    pub fn open(selector: Option<&str>) -> Result<Arc<WgpuDevice>, ExecError> {
        type Opened = HashMap<Option<String>, Result<Arc<WgpuDevice>, String>>;
        static OPENED: OnceLock<Mutex<Opened>> = OnceLock::new();
        let mut opened = OPENED
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        opened
            .entry(selector.map(str::to_string))
            .or_insert_with(|| WgpuDevice::new(selector).map_err(|e| e.to_string()))
            .clone()
            .map_err(ExecError::Device)
    }

    /// The device `KILN_DEVICE` chooses (`wgpu`, `wgpu:N` or `wgpu:NAME`; any other value or
    /// none: the best adapter), through [`WgpuDevice::open`].
    pub fn shared() -> Result<Arc<WgpuDevice>, ExecError> {
        let sel = std::env::var("KILN_DEVICE").ok();
        WgpuDevice::open(sel.as_deref().and_then(|s| s.strip_prefix("wgpu:")))
    }

    /// The first error the device reported since the last call, as an error.
    pub fn take_error(&self) -> Result<(), ExecError> {
        match self.error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => Err(ExecError::Device(e)),
            None => Ok(()),
        }
    }

    /// A new zeroed storage buffer of at least `bytes` (rounded up to 4, at least 16).
    pub fn buffer(&self, bytes: u64, label: &str) -> Result<Arc<GpuBuffer>, ExecError> {
        let size = bytes.max(16).next_multiple_of(4);
        let max = self.limits.max_storage_buffer_binding_size;
        if size > max {
            return Err(ExecError::Device(format!(
                "{label} needs {size} bytes; this adapter binds at most {max} bytes per buffer"
            )));
        }
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        Ok(Arc::new(GpuBuffer {
            buffer,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            size,
        }))
    }

    /// A buffer holding `bytes` (padded with zeros to a multiple of 4).
    pub fn upload(&self, bytes: &[u8], label: &str) -> Result<Arc<GpuBuffer>, ExecError> {
        let b = self.buffer(bytes.len() as u64, label)?;
        self.write(&b, bytes);
        Ok(b)
    }

    /// Writes `bytes` at the start of `b` (padded to a multiple of 4).
    pub fn write(&self, b: &GpuBuffer, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if bytes.len().is_multiple_of(4) {
            self.queue.write_buffer(&b.buffer, 0, bytes);
        } else {
            let mut v = bytes.to_vec();
            v.resize(bytes.len().next_multiple_of(4), 0);
            self.queue.write_buffer(&b.buffer, 0, &v);
        }
    }

    /// A weight's buffer, shared by every executable that loads the same bytes (same address
    /// and length, e.g. one memory-mapped file) while one of them holds it.
    pub fn weight(&self, bytes: &[u8], label: &str) -> Result<Arc<GpuBuffer>, ExecError> {
        let key = (bytes.as_ptr() as usize, bytes.len());
        let mut cache = self.weights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = cache.get(&key).and_then(Weak::upgrade) {
            return Ok(b);
        }
        let b = self.upload(bytes, label)?;
        cache.retain(|_, w| w.strong_count() > 0);
        cache.insert(key, Arc::downgrade(&b));
        Ok(b)
    }

    /// Reads `len` bytes from the start of each of `bufs` (one submission, one wait).
    pub fn download(&self, bufs: &[(&GpuBuffer, u64)]) -> Result<Vec<Vec<u8>>, ExecError> {
        let mut offsets = Vec::new();
        let mut total = 0u64;
        for (_, len) in bufs {
            offsets.push(total);
            total += len.next_multiple_of(4);
        }
        if total == 0 {
            return Ok(bufs.iter().map(|_| Vec::new()).collect());
        }
        // Held for the whole download: the staging buffer is mapped in between.
        let mut cached = self.staging.lock().unwrap_or_else(|p| p.into_inner());
        if cached.as_ref().is_none_or(|b| b.size() < total) {
            *cached = Some(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kiln download"),
                size: total.next_power_of_two(),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
        }
        let staging = cached.as_ref().expect("made above");
        let mut enc = self.device.create_command_encoder(&Default::default());
        for ((b, len), off) in bufs.iter().zip(&offsets) {
            let n = len.next_multiple_of(4).min(b.size);
            if n > 0 {
                enc.copy_buffer_to_buffer(&b.buffer, 0, staging, *off, n);
            }
        }
        self.queue.submit([enc.finish()]);
        let slice = staging.slice(..total);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| ExecError::Device(format!("wait: {e}")))?;
        rx.recv()
            .map_err(|e| ExecError::Device(format!("map: {e}")))?
            .map_err(|e| ExecError::Device(format!("map: {e}")))?;
        // Unmapped whatever happens next: the buffer is reused by the next download.
        let out = self.take_error().and_then(|()| {
            let data = slice
                .get_mapped_range()
                .map_err(|e| ExecError::Device(format!("map: {e}")))?;
            Ok(bufs
                .iter()
                .zip(&offsets)
                .map(|((_, len), off)| data[*off as usize..(*off + *len) as usize].to_vec())
                .collect())
        });
        staging.unmap();
        out
    }

    /// The pipeline of a compiled kernel (built once per distinct source).
    pub fn pipeline(&self, k: &WgslKernel) -> Result<Arc<Pipeline>, ExecError> {
        let mut cache = self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cache.get(&k.source) {
            return Ok(p.clone());
        }
        let d = &self.device;
        let meta_bytes = (k.meta.len().div_ceil(4).max(1) * 16) as u64;
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: std::num::NonZeroU64::new(meta_bytes),
            },
            count: None,
        }];
        for (i, b) in k.bindings.iter().enumerate() {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage {
                        read_only: !b.writable,
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        if k.status {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: k.bindings.len() as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: false },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        let layout = d.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(&k.name),
            entries: &entries,
        });
        let module = d.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&k.name),
            source: wgpu::ShaderSource::Wgsl(k.source.as_str().into()),
        });
        let pl = d.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&k.name),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&k.name),
            layout: Some(&pl),
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        self.take_error()
            .map_err(|e| ExecError::Device(format!("kernel {}: {e}", k.name)))?;
        let p = Arc::new(Pipeline { pipeline, layout });
        cache.insert(k.source.clone(), p.clone());
        Ok(p)
    }
}
