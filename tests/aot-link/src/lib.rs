//! Kernels compiled ahead of time and linked into this crate.
//!
//! `build.rs` schedules the graph of [`graph`], emits its kernels into an object file with
//! `kiln_compiler::backend::cpu::object::emit_object`, archives it and links it, and
//! describes the schedule in a generated file ([`KERNELS`], [`BUFFERS`], [`LOAD_TIME`],
//! [`LAUNCHES`], [`OUTPUTS`]). [`run_aot`] runs the whole schedule from the linked functions,
//! one buffer per schedule buffer (no arena, no JIT). The tests compare it with the JIT
//! (`kiln_runtime::CpuExecutable`) and the reference interpreter.

pub mod graph;

// The linked kernels call the scalar helpers `kiln_cpu_kernels` exports (`kiln_unary_f64`, ...):
// this makes sure its rlib is on the link line of every program using this crate.
extern crate kiln_cpu_kernels;

use kiln_ir::{Bindings, DType, Dim, Storage, Tensor};

/// The kernel ABI (see `kiln_compiler::backend::cpu::codegen`).
pub type KernelFn = unsafe extern "C" fn(*const *mut u8, *const i64, i64, i64, *mut i64);

/// One kernel of the schedule.
#[derive(Clone, Copy, Debug)]
pub struct KernelDesc {
    /// Its symbol in the object.
    pub symbol: &'static str,
    /// The linked function.
    pub entry: KernelFn,
    /// The kernel's name in the schedule.
    pub name: &'static str,
    /// Buffer ids, in parameter order.
    pub params: &'static [usize],
    /// Element count of each parameter (`Dim` text).
    pub param_lens: &'static [&'static str],
    /// Symbol names, in the order the kernel takes their values.
    pub symbols: &'static [&'static str],
    /// Flat trip count of the parallel nest (`Dim` text), if the kernel has one.
    pub parallel: Option<&'static str>,
    /// The kernel's loop IR as printed at build time.
    pub loop_ir: &'static str,
}

/// What a buffer holds.
#[derive(Clone, Copy, Debug)]
pub enum Role {
    /// The graph input with this name.
    Input(&'static str),
    /// The param with this name.
    Param(&'static str),
    /// A constant: its little-endian bytes.
    Constant(&'static [u8]),
    /// A graph output.
    Output,
    /// Computed from params at load time.
    Derived,
    /// Produced and consumed within one run.
    Intermediate,
    /// Private to one launch.
    Scratch,
}

/// One buffer of the schedule.
#[derive(Clone, Copy, Debug)]
pub struct BufferDesc {
    /// Element type (its IR name).
    pub dtype: &'static str,
    /// Shape (`Dim` texts).
    pub shape: &'static [&'static str],
    /// Element count (`Dim` text).
    pub size: &'static str,
    /// What it holds.
    pub role: Role,
}

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// Why [`run_aot`] failed.
#[derive(Debug, PartialEq, Eq)]
pub enum AotError {
    /// A param, input or symbol value is missing or of the wrong type.
    Bad(String),
    /// A kernel reported a data-dependent index out of range.
    IndexOutOfRange(&'static str),
}

/// A zeroed, 64-byte aligned byte buffer.
#[derive(Clone)]
struct Buffer {
    chunks: Vec<[u64; 8]>,
    len: usize,
}

impl Buffer {
    fn zeroed(len: usize) -> Buffer {
        Buffer {
            chunks: vec![[0; 8]; len.div_ceil(64).max(1)],
            len,
        }
    }

    fn from_bytes(bytes: &[u8]) -> Buffer {
        let mut b = Buffer::zeroed(bytes.len());
        b.bytes_mut().copy_from_slice(bytes);
        b
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `chunks` holds at least `len` initialized bytes.
        unsafe { std::slice::from_raw_parts(self.chunks.as_ptr().cast(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.chunks.as_mut_ptr().cast(), self.len) }
    }
}

fn eval(text: &str, b: &Bindings) -> Result<i64, AotError> {
    let d = Dim::parse(text).map_err(|e| AotError::Bad(format!("dim `{text}`: {e}")))?;
    d.eval(b)
        .map_err(|e| AotError::Bad(format!("dim `{text}`: {e}")))
}

fn dtype(name: &str) -> DType {
    DType::from_name(name).unwrap_or_else(|| panic!("unknown dtype {name}"))
}

fn bytes_of(dtype: DType, elements: i64) -> usize {
    let n = elements.max(0) as usize;
    match dtype {
        DType::Quant(q) => n.div_ceil(q.block_size()) * q.block_bytes(),
        d => n * d.size_bytes().unwrap_or(1),
    }
}

/// A tensor's little-endian bytes (the dtypes this graph uses).
pub fn tensor_bytes(t: &Tensor) -> Vec<u8> {
    match t.storage() {
        Storage::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Storage::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Storage::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        _ => panic!("dtype {} not used by this graph", t.dtype()),
    }
}

/// A tensor from little-endian bytes (the dtypes this graph uses).
pub fn tensor_from_bytes(dtype: DType, shape: Vec<usize>, bytes: &[u8]) -> Tensor {
    let n: usize = shape.iter().product();
    let storage = match dtype {
        DType::F32 => Storage::F32(
            bytes[..4 * n]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        DType::I32 => Storage::I32(
            bytes[..4 * n]
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        DType::I64 => Storage::I64(
            bytes[..8 * n]
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        d => panic!("dtype {d} not used by this graph"),
    };
    Tensor::new(shape, storage).expect("shape and storage agree")
}

/// Runs kernel `k` over its whole parallel range, split into `chunks` calls.
fn launch(
    k: usize,
    bufs: &mut [Option<Buffer>],
    b: &Bindings,
    chunks: i64,
) -> Result<(), AotError> {
    let desc = &KERNELS[k];
    let mut args: Vec<*mut u8> = Vec::with_capacity(desc.params.len());
    for (&id, len) in desc.params.iter().zip(desc.param_lens) {
        let need = bytes_of(dtype(BUFFERS[id].dtype), eval(len, b)?);
        let buf = bufs[id]
            .as_mut()
            .ok_or_else(|| AotError::Bad(format!("{}: buffer {id} not allocated", desc.name)))?;
        if buf.len < need {
            return Err(AotError::Bad(format!(
                "{}: buffer {id} holds {} bytes, needs {need}",
                desc.name, buf.len
            )));
        }
        args.push(buf.chunks.as_mut_ptr().cast());
    }
    let syms = desc
        .symbols
        .iter()
        .map(|s| eval(s, b))
        .collect::<Result<Vec<i64>, _>>()?;
    let total = match desc.parallel {
        Some(d) => eval(d, b)?.max(0),
        None => 1,
    };
    let chunks = if desc.parallel.is_some() {
        chunks.clamp(1, total.max(1))
    } else {
        1
    };
    let mut status = 0i64;
    for c in 0..chunks {
        let (lo, hi) = (total * c / chunks, total * (c + 1) / chunks);
        // SAFETY: every buffer holds at least the bytes the kernel's parameters declare,
        // `syms` holds its symbols in order, and the ranges are disjoint parts of its
        // parallel nest.
        unsafe { (desc.entry)(args.as_ptr(), syms.as_ptr(), lo, hi, &mut status) };
    }
    if status != 0 {
        return Err(AotError::IndexOutOfRange(desc.name));
    }
    Ok(())
}

/// Runs the schedule from the linked kernels: load-time kernels, then every launch, each
/// parallel kernel's range split into `chunks` calls. Returns the outputs by name.
pub fn run_aot(
    params: &[(&str, &Tensor)],
    inputs: &[(&str, &Tensor)],
    bindings: &Bindings,
    chunks: i64,
) -> Result<Vec<(String, Tensor)>, AotError> {
    let mut bufs: Vec<Option<Buffer>> = vec![None; BUFFERS.len()];
    let find = |list: &[(&str, &Tensor)], name: &str| -> Result<Buffer, AotError> {
        list.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| Buffer::from_bytes(&tensor_bytes(t)))
            .ok_or_else(|| AotError::Bad(format!("no value for `{name}`")))
    };
    let none = Bindings::new();
    // Weights and load time.
    for (id, d) in BUFFERS.iter().enumerate() {
        bufs[id] = match d.role {
            Role::Param(n) => Some(find(params, n)?),
            Role::Constant(bytes) => Some(Buffer::from_bytes(bytes)),
            Role::Derived => Some(Buffer::zeroed(bytes_of(
                dtype(d.dtype),
                eval(d.size, &none)?,
            ))),
            _ => None,
        };
    }
    for &k in LOAD_TIME {
        launch(k, &mut bufs, &none, chunks)?;
    }
    // One run.
    for (id, d) in BUFFERS.iter().enumerate() {
        match d.role {
            Role::Input(n) => bufs[id] = Some(find(inputs, n)?),
            Role::Output | Role::Intermediate | Role::Scratch => {
                bufs[id] = Some(Buffer::zeroed(bytes_of(
                    dtype(d.dtype),
                    eval(d.size, bindings)?,
                )))
            }
            _ => {}
        }
    }
    for &k in LAUNCHES {
        launch(k, &mut bufs, bindings, chunks)?;
    }
    OUTPUTS
        .iter()
        .map(|&(name, id)| {
            let d = &BUFFERS[id];
            let shape = d
                .shape
                .iter()
                .map(|s| eval(s, bindings).map(|v| v.max(0) as usize))
                .collect::<Result<Vec<_>, _>>()?;
            let bytes = bufs[id].as_ref().expect("outputs are allocated").bytes();
            Ok((
                name.to_string(),
                tensor_from_bytes(dtype(d.dtype), shape, bytes),
            ))
        })
        .collect()
}

/// Deterministic values in `[-1, 1)`.
pub fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The weights the tests use, by name.
pub fn params() -> Vec<(&'static str, Tensor)> {
    use graph::{C, D, H, V};
    let t = |shape: Vec<usize>, seed| {
        let n = shape.iter().product();
        Tensor::from_vec(shape, rand(n, seed)).expect("sizes agree")
    };
    vec![
        ("emb", t(vec![V, D], 1)),
        ("w1", t(vec![H, D], 2)),
        ("g1", t(vec![H, 1], 3)),
        ("b1", t(vec![H], 4)),
        ("wa", t(vec![H, H], 5)),
        ("ba", t(vec![H], 6)),
        ("wb", t(vec![H, H], 7)),
        ("bb", t(vec![H], 8)),
        ("w2", t(vec![C, H], 9)),
        ("b2", t(vec![C], 10)),
    ]
}

/// The inputs for `n` rows: `x` in `[-2, 2)`, `ids` spread over positive and negative values.
pub fn inputs(n: usize) -> Vec<(&'static str, Tensor)> {
    let x: Vec<f32> = rand(n * graph::D, 100 + n as u64)
        .into_iter()
        .map(|v| 2.0 * v)
        .collect();
    let ids: Vec<i32> = (0..n as i32).map(|i| i * 37 - 500).collect();
    vec![
        (
            "x",
            Tensor::from_vec(vec![n, graph::D], x).expect("sizes agree"),
        ),
        ("ids", Tensor::from_vec(vec![n], ids).expect("sizes agree")),
    ]
}
