//! The WGSL backend: loop-IR kernels printed as WGSL compute shaders, validated by naga at
//! compile time and run by wgpu (`kiln_runtime::wgpu`) on Vulkan, Metal or DX12.
//!
//! # What a kernel becomes
//!
//! One [`WgslKernel`]: a WGSL module with one entry point `main`, the number of workgroups to
//! launch (a [`Dim`] of the kernel's symbols) and its bindings:
//!
//! - binding 0 is a uniform buffer of `i32`s ([`WgslKernel::meta`]): the kernel's symbol
//!   values, then each buffer parameter's base offset in 32-bit words within its binding;
//! - bindings 1.. are storage buffers viewed as `array<u32>` ([`WgslKernel::bindings`]). Several
//!   parameters may share one binding at different offsets (the runtime's arena of
//!   intermediates), as the caller's [`Layout`] says. Every dtype is read and written through
//!   32-bit words: f32/i32/u32 one word per element, f64/i64 two, f16/bf16/i16 a half word,
//!   i8/u8/bool a byte, block-quantized types by bytes ([`dequant`]). A binding that a kernel
//!   writes with sub-word elements is declared `array<atomic<u32>>`, and those elements are
//!   stored with `atomicAnd`/`atomicOr` so that neighbouring threads never lose each other's
//!   writes.
//!
//! # Values
//!
//! WGSL has no f64 and no i64 (without optional features): f32, f16, bf16 and f64 values are
//! held as `f32` (f16 and bf16 rounded to their precision after every op, ties to
//! even, by bit manipulation), every integer dtype as `i32` wrapped to its width, bools as `bool`.
//! So **f64 accumulators are f32 accumulators** here (sums agree with the interpreter within
//! f32 accumulation error), **i64 values are 32-bit** (index arithmetic and token ids; values
//! beyond ±2^31 are not supported), and transcendental functions are the platform's
//! (`exp`, `log`, `sin`, `tanh`, ... within a few ulp; `erf` is a 1.2e-7 fit). The helpers in
//! [`prelude`] give integer floor division and modulo, NaN-propagating min/max, `pow` of
//! negative bases and saturating float-to-int casts the interpreter's meaning.
//!
//! # Mapping loops to the GPU
//!
//! The *GPU nest* of a kernel is its outermost `Parallel` loops while each is the only
//! statement of its parent and its extent does not depend on an outer loop (as the CPU's
//! parallel nest, but the innermost loop is included). Then one of three shapes:
//!
//! - **Flat**: one thread per point of the collapsed nest (elementwise kernels, KV-cache
//!   writes), `workgroup` threads per workgroup ([`crate::loop_ir::KernelConfig`]).
//! - **Cooperative**: when the nest's body holds a reduction loop whose accumulator can be
//!   combined (`acc = acc (+|*|max|min) x`), one workgroup of [`COOP_THREADS`] threads per
//!   point (a row of a norm or softmax, an output element of a matmul). The threads split
//!   each such reduction (and each parallel loop at the body's top level) by striding, combine
//!   the partial accumulators in workgroup memory with a tree, and all continue with the
//!   result; other statements run in every thread with the same values, and a store outside
//!   a split loop is done by thread 0 only. A storage barrier separates a store from later
//!   statements that read memory. The tree (or, with [`Target::subgroups`], a subgroup op
//!   per subgroup and then thread 0 over the subgroups) combines in another order than the
//!   interpreter's sequential sum (f32 accumulation error).
//! - **Single**: no nest and nothing to split (a serial scatter): one workgroup of
//!   [`COOP_THREADS`] threads, as a cooperative kernel's single point: top-level parallel
//!   loops split across the threads, serial loops run in every thread with thread 0 storing.
//!   (Long single-thread loops are also what drivers handle worst: lavapipe silently drops
//!   work past some tens of thousands of iterations of one invocation.)
//!
//! Lazy selects become eager `select`s: every load is bounds-checked by naga/wgpu (an index
//! outside a buffer reads a clamped element), so evaluating the unchosen side is harmless.

pub mod dequant;
mod emit;
pub mod prelude;

use crate::loop_ir::{BufferId, Kernel};
use kiln_ir::Dim;

pub use emit::COOP_THREADS;

/// Which buffer parameters share which storage binding (bindings are numbered from 1 in this
/// order; binding 0 is the uniform). A parameter not listed gets a binding of its own after
/// the listed ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Groups of buffers bound together (e.g. every intermediate, in the runtime's arena).
    pub shared: Vec<Vec<BufferId>>,
}

/// What the adapter offers beyond core WebGPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Target {
    /// Subgroup operations (wgpu's `SUBGROUP` feature): cooperative sums and products (and integer
    /// min/max) combine each subgroup with one `subgroupAdd`-style op before the workgroup
    /// step, instead of a tree over workgroup memory. Float min/max (whose NaN rule subgroup
    /// ops do not promise) and f16/bf16 accumulators (rounded after every step) keep the tree.
    pub subgroups: bool,
}

/// One value of a kernel's uniform buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaSlot {
    /// The value of a symbol.
    Symbol(String),
    /// The base offset, in 32-bit words, of a buffer within its binding.
    Offset(BufferId),
    /// Which word of the status buffer this launch reports in (see [`WgslKernel::status`]).
    StatusWord,
}

/// A storage binding of a kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The buffers it holds (each at its [`MetaSlot::Offset`]).
    pub buffers: Vec<BufferId>,
    /// Whether the kernel writes through it (`read_write`; otherwise `read`).
    pub writable: bool,
}

/// A kernel compiled to WGSL.
#[derive(Clone, Debug, PartialEq)]
pub struct WgslKernel {
    /// The loop-IR kernel's name.
    pub name: String,
    /// The WGSL module (entry point `main`), validated by naga.
    pub source: String,
    /// Threads per workgroup (one-dimensional).
    pub workgroup_size: u32,
    /// Workgroups to launch; the runtime evaluates it and spreads it over the x and y axes
    /// (the shader reads its flat workgroup index as `x + y * num_workgroups.x`).
    pub workgroups: Dim,
    /// Storage bindings 1.. in order.
    pub bindings: Vec<Binding>,
    /// The uniform's values (binding 0), in order: `i32`s packed four to a `vec4`.
    pub meta: Vec<MetaSlot>,
    /// Whether the kernel takes a status buffer (`array<atomic<u32>>`, the binding after
    /// [`WgslKernel::bindings`]) and ORs into its [`MetaSlot::StatusWord`]: bit 1 when a
    /// data-dependent index (embedding row, gather, scatter) fell outside its buffer (the
    /// access is clamped into it), bit 2 when an i64 value did not fit the 32 bits it is
    /// computed in. The runtime turns either into an error.
    pub status: bool,
}

/// Why a kernel could not be compiled to WGSL.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum WgslError {
    /// The kernel uses something this backend cannot express.
    #[error("kernel {kernel}: WGSL backend: {message}")]
    Unsupported {
        /// Kernel name.
        kernel: String,
        /// What and why.
        message: String,
    },
    /// naga rejected the emitted module: a bug of this backend, reported with the kernel's
    /// loop IR and its WGSL.
    #[error("kernel {kernel}: naga rejected the emitted WGSL (a compiler bug): {message}\n--- loop IR ---\n{loop_ir}\n--- WGSL ---\n{wgsl}")]
    Invalid {
        /// Kernel name.
        kernel: String,
        /// naga's message.
        message: String,
        /// The kernel's loop IR.
        loop_ir: String,
        /// The emitted module.
        wgsl: String,
    },
}

/// Compiles `kernel` to WGSL with the bindings `layout` asks for, for an adapter offering
/// `target`, and validates the result with naga.
pub fn compile_kernel(
    kernel: &Kernel,
    layout: &Layout,
    target: Target,
) -> Result<WgslKernel, WgslError> {
    let k = emit::emit(kernel, layout, target)?;
    validate(&k.source, target).map_err(|message| WgslError::Invalid {
        kernel: kernel.name.clone(),
        message,
        loop_ir: kernel.to_string(),
        wgsl: k.source.clone(),
    })?;
    Ok(k)
}

/// Parses and validates a WGSL module with naga (all validation flags; the capabilities every
/// WebGPU adapter has, plus subgroups where `target` has them).
pub fn validate(source: &str, target: Target) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| e.emit_to_string(source))?;
    let caps = if target.subgroups {
        naga::valid::Capabilities::SUBGROUP
    } else {
        naga::valid::Capabilities::empty()
    };
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| e.emit_to_string(source))?;
    Ok(())
}
