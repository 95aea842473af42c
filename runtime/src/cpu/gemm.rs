//! Runs a matmul kernel split by [`kiln_compiler::backend::cpu::matmul`]: tasks of
//! (batch, row block, column block) on the thread pool, each packing A with generated code,
//! multiplying with a micro-kernel of `kiln-cpu-kernels` and storing through the generated
//! epilogue.
//!
//! Block-quantized weights (GGUF types) take one of two routes by the task's row count:
//! from [`f32_route_rows`] rows on, the task's weight rows are dequantized to f32 and
//! multiplied by the f32 GEMM; below (decode, short prompts), fused dots of the f32
//! activations with the quantized blocks (`gemm_nt_qf32`). Both are as accurate as f32
//! products of the dequantized weights. An executable that
//! [quantizes activations](super::CpuExecutable::quantize_activations) (the LLM runtime's
//! default) runs the few-row route as llama.cpp does instead: each activation row quantized
//! to 8 bits per block once, integer dots against the weight blocks (`gemm_nt_q`; about
//! 0.4% RMS error per product).

use super::team::{max_over, Team};
use kiln_compiler::backend::cpu::matmul::{BOperand, MatmulPlan};
use kiln_compiler::backend::cpu::JitKernel;
use kiln_compiler::loop_ir::{BufferId, Kernel};
use kiln_cpu_kernels as mk;
use kiln_ir::{Bindings, DType, DimError, QuantType};
use std::cell::RefCell;
use std::sync::Arc;

/// A matmul kernel's plan and its compiled derived kernels.
pub(crate) struct GemmKernel {
    pub plan: MatmulPlan,
    pub pack_a: Vec<Arc<JitKernel>>,
    pub pack_b: Vec<Option<Arc<JitKernel>>>,
    pub epilogue: Arc<JitKernel>,
    /// Whether an operand read in place has an offset that mentions a batch loop variable
    /// (tasks then evaluate it with bindings that include them).
    pub batch_offsets: bool,
}

/// Kernels of a plan in compile order: per phase pack A (and pack B when packed), then the
/// epilogue.
pub(crate) fn derived_kernels(plan: &MatmulPlan) -> Vec<Kernel> {
    let mut out = Vec::new();
    for p in &plan.phases {
        out.push(p.pack_a.clone());
        if let BOperand::Packed(k) = &p.b {
            out.push(k.clone());
        }
    }
    out.push(plan.epilogue.clone());
    out
}

impl GemmKernel {
    /// Pairs a plan with its compiled kernels (in [`derived_kernels`] order).
    pub fn new(plan: MatmulPlan, compiled: &mut impl Iterator<Item = Arc<JitKernel>>) -> Self {
        let mut pack_a = Vec::new();
        let mut pack_b = Vec::new();
        for p in &plan.phases {
            pack_a.push(
                compiled
                    .next()
                    .expect("one compiled kernel per derived kernel"),
            );
            pack_b.push(match p.b {
                BOperand::Packed(_) => compiled.next(),
                BOperand::Direct { .. } => None,
            });
        }
        let epilogue = compiled.next().expect("the epilogue");
        let mut offsets: Vec<&kiln_ir::Dim> = Vec::new();
        for p in &plan.phases {
            offsets.extend(p.a_direct.iter().flat_map(|(_, base, ld)| [base, ld]));
            offsets.extend(p.b_rows.iter().flat_map(|(_, base, ld)| [base, ld]));
            if let BOperand::Direct { base, ld, .. } = &p.b {
                offsets.extend([base, ld]);
            }
        }
        let batch_offsets = offsets
            .iter()
            .any(|d| d.symbols().iter().any(|s| plan.batch_vars.contains(s)));
        GemmKernel {
            plan,
            pack_a,
            pack_b,
            epilogue,
            batch_offsets,
        }
    }
}

/// From this many rows on, a block-quantized weight block is dequantized to f32 and
/// multiplied with the f32 activations; below, fused quantized × f32 dots (or, with
/// `q8`, integer dots against quantized activations). The fused kernels
/// decode each weight block once per four rows, the f32 route once per task; measured on
/// Zen 3 (one task of 1024 weight rows), the fused kernels stay faster up to about 48 rows
/// for the 4- to 6-bit types and up to about 20 for `Q8_0`, whose blocks cost least to
/// decode. The 8-bit-activation route keeps its own threshold of 16.
fn f32_route_rows(q: QuantType, q8: bool) -> i64 {
    match q {
        _ if q8 => 16,
        QuantType::Q8_0 | QuantType::Q8_K => 16,
        _ => 32,
    }
}

/// How `rows` activation rows multiply a block-quantized weight of type `q`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum QuantRoute {
    /// Weight rows dequantized to f32, then the f32 GEMM.
    Dequantized,
    /// Fused dots of the f32 activations with the quantized blocks.
    F32Activations,
    /// Integer dots against activations quantized to 8 bits per block.
    Q8Activations,
}

fn quant_route(q: QuantType, rows: i64, q8: bool) -> QuantRoute {
    if rows >= f32_route_rows(q, q8) {
        QuantRoute::Dequantized
    } else if q8 {
        QuantRoute::Q8Activations
    } else {
        QuantRoute::F32Activations
    }
}

/// Rows per task (a multiple of the f32 micro-kernel's 6-row panels).
const ROW_BLOCK: i64 = 96;
/// Rows per task when a right operand is block-quantized: each task dequantizes its weight
/// rows once, so fewer, taller tasks dequantize less (a 512-token prompt: once instead of six
/// times per weight row; measured 200 -> 257 tok/s on SmolLM2 pp512 at 2 threads). Tasks then
/// split the columns finer for parallelism.
const QUANT_ROW_BLOCK: i64 = 768;
/// From this many rows on, a product is "tall" and gets two tasks per thread instead of
/// four.
const TALL_ROWS: i64 = 64;
/// Columns per task when there is enough parallelism over rows and batches (the
/// micro-kernel's own column block).
const COL_BLOCK: i64 = 1024;

/// Rows per group of [`zero_tail_groups`] (a multiple of the f32 micro-kernel's 6-row
/// panels).
const ZERO_TAIL_ROWS: usize = 24;
/// Contractions shorter than this are not scanned for zero tails.
const ZERO_TAIL_MIN_K: usize = 128;

/// Calls `f(first row, rows, k)` for groups of [`ZERO_TAIL_ROWS`] rows of an f32 left
/// operand (`rows` rows of `k` elements at stride `lda`; consecutive groups of the same
/// length merged), each with the contraction length its rows need: one past the last
/// nonzero element of any of them. Terms `0 · b` are so left out of the product: causal
/// attention's probabilities are zero past each query's position, so `probs @ V` skips the
/// masked half of its work. The result is the full product's wherever `B` is finite in the
/// skipped rows (`x + 0 · b == x`; an inf or NaN there would have made the full sum NaN).
fn zero_tail_groups(
    a: *const f32,
    lda: usize,
    rows: usize,
    k: usize,
    mut f: impl FnMut(usize, usize, usize),
) {
    if k < ZERO_TAIL_MIN_K {
        return f(0, rows, k);
    }
    // The pending group: (first row, rows, k).
    let mut group: Option<(usize, usize, usize)> = None;
    let mut r0 = 0;
    while r0 < rows {
        let n = ZERO_TAIL_ROWS.min(rows - r0);
        let mut need = 0;
        for r in r0..r0 + n {
            // SAFETY: row `r < rows` of A holds `k` readable f32 (the caller's operand).
            let row = unsafe { std::slice::from_raw_parts(a.add(r * lda), k) };
            // Only the part past what earlier rows need is scanned.
            need += row[need..]
                .iter()
                .rposition(|&x| x != 0.0)
                .map_or(0, |i| i + 1);
        }
        group = match group {
            Some((g0, gn, gk)) if gk == need => Some((g0, gn + n, gk)),
            Some((g0, gn, gk)) => {
                f(g0, gn, gk);
                Some((r0, n, need))
            }
            None => Some((r0, n, need)),
        };
        r0 += n;
    }
    if let Some((g0, gn, gk)) = group {
        f(g0, gn, gk);
    }
}

/// An f32 product kernel of `kiln-cpu-kernels` (`gemm_nt_f32` or `gemm_nn_f32`): `m`, `n`,
/// `k`, `A` and its stride, `B` and its stride, `C` and its stride.
type F32Gemm =
    unsafe fn(usize, usize, usize, *const f32, usize, *const f32, usize, *mut f32, usize);

/// `gemm` of a task's `rows` rows of A (stride `lda`) with `cols` columns of B (stride
/// `ldb`) into the tile (`ldc` f32 per row), leaving out the zero tails of A's rows
/// ([`zero_tail_groups`]).
///
/// # Safety
/// `gemm`'s contract for the whole `rows × cols × k` product.
#[allow(clippy::too_many_arguments)]
unsafe fn f32_product(
    gemm: F32Gemm,
    rows: usize,
    cols: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    tile: *mut f32,
    ldc: usize,
) {
    zero_tail_groups(a, lda, rows, k, |r, n, kk| {
        // SAFETY: rows `r..r + n` of A and of the tile lie inside the whole product's, and
        // `kk <= k` elements of each are read (the caller's contract).
        unsafe {
            gemm(
                n,
                cols,
                kk,
                a.add(r * lda),
                lda,
                b,
                ldb,
                tile.add(r * ldc),
                ldc,
            )
        }
    });
}

/// Per-thread scratch: packed A, packed B, tiles, quantized A.
type Scratch = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<u8>);

thread_local! {
    static SCRATCH: RefCell<Scratch> =
        const { RefCell::new((Vec::new(), Vec::new(), Vec::new(), Vec::new())) };
}

/// Pointers shared with worker threads (buffers outlive the launch; tasks write disjoint
/// elements of the outputs and only their own scratch).
#[derive(Clone, Copy)]
struct Shared(*const (*mut u8, usize));
// SAFETY: see the type's docs.
unsafe impl Send for Shared {}
// SAFETY: see the type's docs.
unsafe impl Sync for Shared {}

/// One phase's A rows for every task of a launch, prepared once before the tasks run.
#[derive(Default)]
struct SharedA {
    /// The f32 rows (in place, or in `panel`); set by the launch that uses it.
    ptr: Option<*const f32>,
    lda: usize,
    panel: Vec<f32>,
    /// The rows quantized for the 8-bit-activation route, and the bytes per row (`None`
    /// when the launch does not take that route).
    quantized: Vec<u8>,
    quantized_stride: Option<usize>,
}
// SAFETY: workers only read the prepared rows, while the launch that prepared them runs.
unsafe impl Sync for SharedA {}

/// The calling thread's buffers for preparing A once per launch ([`SharedA`] per phase,
/// the symbol values and argument list of the pack kernels), kept between launches so
/// decode allocates nothing for them.
#[derive(Default)]
struct PreparedA {
    syms: Vec<i64>,
    call_args: Vec<*mut u8>,
    phases: Vec<SharedA>,
}

thread_local! {
    /// Taken by a launch that prepares A and put back when it ends.
    static PREPARED_A: std::cell::Cell<PreparedA> = std::cell::Cell::new(PreparedA::default());
}

/// Quantizes `rows` rows of `k` f32 (stride `lda`) for integer dots against weights of type
/// `q` into `out`; returns the bytes per quantized row.
fn quantize_rows(
    q: QuantType,
    a: *const f32,
    lda: usize,
    rows: i64,
    k: usize,
    out: &mut Vec<u8>,
) -> usize {
    let stride = mk::activation_type(q).bytes_for(k).unwrap_or(0);
    out.resize(stride * rows as usize, 0);
    for r in 0..rows as usize {
        // SAFETY: row `r` of A holds `k` f32 at `a + r * lda` (the caller's operand).
        let row = unsafe { std::slice::from_raw_parts(a.add(r * lda), k) };
        mk::quantize_activations(q, row, &mut out[r * stride..(r + 1) * stride]);
    }
    stride
}

/// Why a matmul launch failed.
pub(crate) enum GemmError {
    Dim(DimError),
    /// A data-dependent index was out of range (a generated kernel's status).
    Index,
}

impl From<DimError> for GemmError {
    fn from(e: DimError) -> Self {
        GemmError::Dim(e)
    }
}

/// Runs `g` (for `kernel`, whose parameters' buffers are `ptrs[param index]`) with symbol
/// values `syms` (in `kernel.symbols` order) and bindings `b`; `q8`: few-row products with
/// block-quantized weights run on 8-bit activations
/// ([`super::CpuExecutable::quantize_activations`]).
pub(crate) fn run_gemm(
    g: &GemmKernel,
    kernel: &Kernel,
    args: &[(*mut u8, usize)],
    syms: &[i64],
    b: &Bindings,
    team: &Team,
    q8: bool,
) -> Result<(), GemmError> {
    let plan = &g.plan;
    let threads = team.threads();
    let batch: Vec<i64> = plan
        .batch
        .iter()
        .map(|d| d.eval(b).map(|v| v.max(0)))
        .collect::<Result<_, _>>()?;
    let (rows, cols) = (plan.rows.eval(b)?.max(0), plan.cols.eval(b)?.max(0));
    let ks: Vec<i64> = plan
        .phases
        .iter()
        .map(|p| p.k.eval(b).map(|v| v.max(0)))
        .collect::<Result<_, _>>()?;
    let nbatch: i64 = batch.iter().product();
    if nbatch == 0 || rows == 0 || cols == 0 {
        return Ok(());
    }
    let quantized_b = plan.phases.iter().any(|p| {
        matches!(
            p.b,
            BOperand::Direct {
                dtype: DType::Quant(_),
                ..
            }
        )
    });
    let mb = rows.min(if quantized_b {
        QUANT_ROW_BLOCK
    } else {
        ROW_BLOCK
    });
    let row_blocks = (rows + mb - 1) / mb;
    let outer = nbatch * row_blocks;
    // Enough tasks to balance the threads; each task packs its rows of A again, so tall
    // products (prefill) take fewer, wider tasks (measured: SmolLM2 pp512 at 2 threads 308
    // -> 355 tok/s with 2 instead of 4 tasks per thread; decode unchanged within noise).
    let per_thread = if rows >= TALL_ROWS { 2 } else { 4 };
    let want = per_thread * threads as i64;
    let nb = if outer >= want {
        COL_BLOCK.min(cols)
    } else {
        let chunks = (want + outer - 1) / outer;
        (((cols + chunks - 1) / chunks + 15) / 16 * 16)
            .clamp(16, COL_BLOCK)
            .min(cols)
    };
    let col_blocks = (cols + nb - 1) / nb;
    let tasks = outer * col_blocks;

    // Direct B operands: (base pointer per batch index is computed per task).
    let param_index = |id: BufferId| kernel.params.iter().position(|p| p.id == id);
    let shared = Shared(args.as_ptr());
    let flops: i64 = ks.iter().sum::<i64>() * rows * cols * nbatch;

    // Rows `r0..r0 + rn` of phase `p`'s A as f32 (pointer, row stride): in place when the
    // operand is a contiguous read, else packed into `panel` by the phase's pack kernel.
    #[allow(clippy::too_many_arguments)]
    let prepare_a = |p: usize,
                     args: &[(*mut u8, usize)],
                     r0: i64,
                     rn: i64,
                     bb: &Bindings,
                     s: &[i64],
                     call_args: &mut Vec<*mut u8>,
                     panel: &mut Vec<f32>,
                     status: &mut i64|
     -> Result<(*const f32, usize), GemmError> {
        let k = ks[p] as usize;
        Ok(match &plan.phases[p].a_direct {
            Some((buffer, base, ld)) => {
                let (base, ld) = (base.eval(bb)?, ld.eval(bb)?);
                let i = param_index(*buffer).expect("a direct operand is a parameter");
                // SAFETY: the kernel reads rows `r0..r0 + rn` of this operand.
                let ptr = unsafe { args[i].0.cast::<f32>().add((base + ld * r0) as usize) };
                (ptr, ld as usize)
            }
            None => {
                panel.resize(rn as usize * k, 0.0);
                call_args[args.len()] = panel.as_mut_ptr().cast();
                // SAFETY: the pack kernel's parameters are the matmul kernel's plus the
                // panel, which holds `rn * k` f32; symbols in `plan.symbols` order.
                unsafe { (g.pack_a[p].entry)(call_args.as_ptr(), s.as_ptr(), 0, rn, status) };
                (panel.as_ptr(), k)
            }
        })
    };

    // One row block of one batch (decode, short prompts): every task reads the same rows of
    // A, so they are packed (and, for the 8-bit-activation route, quantized) once here
    // instead of once per task (measured: SmolLM2 decode quantized the activations 4-8
    // times per product, ~10% of a step at 1 thread).
    let share_a = outer == 1 && tasks > 1;
    let mut prepared = PREPARED_A.take();
    if share_a {
        let PreparedA {
            syms: s,
            call_args,
            phases,
        } = &mut prepared;
        s.clear();
        s.extend(syms);
        s.extend(std::iter::repeat_n(0, batch.len()));
        s.extend([0, rows, 0, cols]);
        call_args.clear();
        call_args.extend(args.iter().map(|a| a.0));
        call_args.push(std::ptr::null_mut());
        // Every batch variable is 0 (one batch); bound only where an offset needs them.
        let bb = if g.batch_offsets {
            let mut bb = b.clone();
            for v in &plan.batch_vars {
                bb.set(v, 0);
            }
            std::borrow::Cow::Owned(bb)
        } else {
            std::borrow::Cow::Borrowed(b)
        };
        phases.resize_with(phases.len().max(plan.phases.len()), SharedA::default);
        let mut status = 0i64;
        for ((p, phase), a) in plan.phases.iter().enumerate().zip(phases.iter_mut()) {
            let (ptr, lda) = prepare_a(
                p,
                args,
                0,
                rows,
                &bb,
                s,
                call_args,
                &mut a.panel,
                &mut status,
            )?;
            (a.ptr, a.lda) = (Some(ptr), lda);
            a.quantized_stride =
                match phase.b {
                    BOperand::Direct {
                        dtype: DType::Quant(q),
                        ..
                    } if quant_route(q, rows, q8) == QuantRoute::Q8Activations => Some(
                        quantize_rows(q, ptr, lda, rows, ks[p] as usize, &mut a.quantized),
                    ),
                    _ => None,
                };
        }
        if status != 0 {
            return Err(GemmError::Index);
        }
    }
    let shared_a: &[SharedA] = if share_a {
        &prepared.phases[..plan.phases.len()]
    } else {
        &[]
    };

    // A causal bound (`MatmulPlan::live_columns`): later columns of a tile are left
    // uncomputed.
    let live_bound = match &plan.live_columns {
        Some(l) => Some((l, l.last0.eval(b)?)),
        None => None,
    };

    let task = |t: i64| -> Result<i64, GemmError> {
        let args = shared;
        // SAFETY: `args` has one entry per kernel parameter and outlives the launch.
        let args = unsafe { std::slice::from_raw_parts(args.0, kernel.params.len()) };
        let bi = t / (row_blocks * col_blocks);
        let rb = (t / col_blocks) % row_blocks;
        let cb = t % col_blocks;
        let (r0, c0) = (rb * mb, cb * nb);
        let (rn, cn) = (mb.min(rows - r0), nb.min(cols - c0));
        // Columns `c0..c0 + live` of the tile are computed (all of them without a bound).
        let live = match live_bound {
            Some((l, last0)) => l.count(last0, r0, rn, c0, cn),
            None => cn,
        };
        let mut bvals = vec![0i64; batch.len()];
        let mut rest = bi;
        for i in (0..batch.len()).rev() {
            bvals[i] = rest % batch[i];
            rest /= batch[i];
        }
        let mut s: Vec<i64> = Vec::with_capacity(syms.len() + bvals.len() + 4);
        s.extend(syms);
        s.extend(&bvals);
        s.extend([r0, rn, c0, cn]);
        let mut status = 0i64;
        SCRATCH.with(|scratch| -> Result<(), GemmError> {
            let mut scratch = scratch.borrow_mut();
            let (pa, pb, tiles, qa) = &mut *scratch;
            let tile_len = (rn * cn) as usize;
            tiles.resize(tile_len * plan.phases.len(), 0.0);
            // One argument list per task: the kernel's buffers, then a pack kernel's panel
            // (the last slot, replaced per call) or the epilogue's tiles.
            let mut call_args: Vec<*mut u8> =
                Vec::with_capacity(args.len() + plan.phases.len().max(1));
            call_args.extend(args.iter().map(|a| a.0));
            call_args.push(std::ptr::null_mut());
            let panel_slot = args.len();
            // Bindings with the batch variables, only where an operand's offset needs them.
            let needs_batch = g.batch_offsets;
            let bb = if needs_batch {
                let mut bb = b.clone();
                for (v, x) in plan.batch_vars.iter().zip(&bvals) {
                    bb.set(v, *x);
                }
                std::borrow::Cow::Owned(bb)
            } else {
                std::borrow::Cow::Borrowed(b)
            };
            let (n, ldc) = (live as usize, cn as usize);
            for (p, phase) in plan.phases.iter().enumerate() {
                if n == 0 {
                    // Every column of the tile is past the causal bound: the epilogue
                    // stores values that do not read it.
                    break;
                }
                let k = ks[p] as usize;
                // A: in place when it is a contiguous f32 read, else packed.
                let (a_ptr, lda) = match shared_a.get(p) {
                    Some(SharedA {
                        ptr: Some(ptr),
                        lda,
                        ..
                    }) => (*ptr, *lda),
                    _ => prepare_a(p, args, r0, rn, &bb, &s, &mut call_args, pa, &mut status)?,
                };
                let tile = tiles[p * tile_len..].as_mut_ptr();
                match &phase.b {
                    // A row-major `[k, n]` operand (attention's `V`): read in place by the
                    // NN product (which packs it, without transposing, for many rows),
                    // instead of transposed by the generated pack kernel for every task.
                    BOperand::Packed(_) if phase.b_rows.is_some() => {
                        let (buffer, base, ld) = phase.b_rows.as_ref().expect("checked");
                        let (base, ld) = (base.eval(&bb)?, ld.eval(&bb)?);
                        let i = param_index(*buffer).expect("an in-place operand is a parameter");
                        // SAFETY: the kernel reads elements `base + ld * kk + c` of this f32
                        // operand for `kk < k` and its columns `c`, here `c0..c0 + n`; the
                        // tile holds `rn * cn` f32.
                        unsafe {
                            f32_product(
                                mk::gemm_nn_f32,
                                rn as usize,
                                n,
                                k,
                                a_ptr,
                                lda,
                                args[i].0.cast::<f32>().add((base + c0) as usize),
                                ld as usize,
                                tile,
                                ldc,
                            )
                        };
                    }
                    BOperand::Packed(_) => {
                        pb.resize(n * k, 0.0);
                        call_args[panel_slot] = pb.as_mut_ptr().cast();
                        let pack = g.pack_b[p].as_ref().expect("a packed operand has a kernel");
                        // SAFETY: as for pack A, with `n * k` f32.
                        unsafe {
                            (pack.entry)(call_args.as_ptr(), s.as_ptr(), 0, live, &mut status)
                        };
                        // SAFETY: panels and tile hold the elements the call touches.
                        unsafe {
                            f32_product(
                                mk::gemm_nt_f32,
                                rn as usize,
                                n,
                                k,
                                a_ptr,
                                lda,
                                pb.as_ptr(),
                                k,
                                tile,
                                ldc,
                            )
                        };
                    }
                    BOperand::Direct {
                        buffer,
                        dtype,
                        base,
                        ld,
                    } => {
                        let (base, ld) = (base.eval(&bb)?, ld.eval(&bb)?);
                        let i = param_index(*buffer).expect("a direct operand is a parameter");
                        let buf = args[i].0;
                        // A block-quantized weight: the byte offset of the task's first
                        // weight row and the bytes between rows (block alignment of base,
                        // ld and k was proven by the plan).
                        let (first, w_stride) = match dtype {
                            DType::Quant(q) => {
                                let (bs, bbytes) = (q.block_size() as i64, q.block_bytes() as i64);
                                (
                                    ((base + ld * c0) / bs * bbytes) as usize,
                                    (ld / bs * bbytes) as usize,
                                )
                            }
                            _ => (0, 0),
                        };
                        match dtype {
                            DType::Quant(q)
                                if quant_route(*q, rn, q8) == QuantRoute::Dequantized =>
                            {
                                // Enough rows to amortize dequantizing the weight block:
                                // f32 weights against the exact f32 activations.
                                pb.resize(n * k, 0.0);
                                for j in 0..n {
                                    // SAFETY: weight row `c0 + j` is `k` elements of whole
                                    // blocks the kernel reads; `pb` holds `cn * k` f32.
                                    unsafe {
                                        mk::dequantize_row(
                                            *q,
                                            k,
                                            buf.add(first + j * w_stride),
                                            pb.as_mut_ptr().add(j * k),
                                        )
                                    };
                                }
                                // SAFETY: as for the packed operand.
                                unsafe {
                                    mk::gemm_nt_f32(
                                        rn as usize,
                                        n,
                                        k,
                                        a_ptr,
                                        lda,
                                        pb.as_ptr(),
                                        k,
                                        tile,
                                        ldc,
                                    )
                                };
                            }
                            DType::Quant(q)
                                if quant_route(*q, rn, q8) == QuantRoute::F32Activations =>
                            {
                                // Few rows (decode): the f32 activations against the
                                // quantized blocks, fused.
                                // SAFETY: the kernel reads rows `r0..r0 + rn` of A (`k`
                                // f32 each) and the weight rows' blocks.
                                unsafe {
                                    mk::gemm_nt_qf32(
                                        *q,
                                        rn as usize,
                                        n,
                                        k,
                                        a_ptr,
                                        lda,
                                        buf.add(first),
                                        w_stride,
                                        tile,
                                        ldc,
                                    )
                                };
                            }
                            DType::Quant(q) => {
                                // Few rows, quantized activations: integer dots against
                                // activations quantized to 8 bits per block, as llama.cpp
                                // does.
                                let (qa_ptr, a_stride) = match shared_a.get(p) {
                                    Some(SharedA {
                                        quantized,
                                        quantized_stride: Some(stride),
                                        ..
                                    }) => (quantized.as_ptr(), *stride),
                                    _ => {
                                        let stride = quantize_rows(*q, a_ptr, lda, rn, k, qa);
                                        (qa.as_ptr(), stride)
                                    }
                                };
                                // SAFETY: the kernel reads these blocks (checked sizes).
                                unsafe {
                                    mk::gemm_nt_q(
                                        *q,
                                        rn as usize,
                                        n,
                                        k,
                                        qa_ptr,
                                        a_stride,
                                        buf.add(first),
                                        w_stride,
                                        tile,
                                        ldc,
                                    )
                                };
                            }
                            _ => {
                                let first = (base + ld * c0) as usize;
                                // SAFETY: as above, f32 elements.
                                unsafe {
                                    f32_product(
                                        mk::gemm_nt_f32,
                                        rn as usize,
                                        n,
                                        k,
                                        a_ptr,
                                        lda,
                                        buf.cast::<f32>().add(first),
                                        ld as usize,
                                        tile,
                                        ldc,
                                    )
                                };
                            }
                        }
                    }
                }
            }
            let mut e_args = call_args;
            e_args.truncate(panel_slot);
            for p in 0..plan.phases.len() {
                e_args.push(tiles[p * tile_len..].as_mut_ptr().cast());
            }
            // SAFETY: the epilogue's parameters are the kernel's plus one tile per phase.
            unsafe { (g.epilogue.entry)(e_args.as_ptr(), s.as_ptr(), 0, rn, &mut status) };
            Ok(())
        })?;
        Ok(status)
    };
    let parallel = threads > 1 && tasks > 1 && flops >= 1 << 16;
    let status = max_over(parallel.then_some(team), tasks as usize, &|t| {
        task(t as i64)
    });
    for a in &mut prepared.phases {
        a.ptr = None;
    }
    PREPARED_A.set(prepared);
    let status = status?;
    if status != 0 {
        return Err(GemmError::Index);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::zero_tail_groups;

    fn groups(a: &[f32], k: usize, rows: usize, kk: usize) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        zero_tail_groups(a.as_ptr(), k, rows, kk, |r, n, k| out.push((r, n, k)));
        out
    }

    /// Rows nonzero up to column `r + 150` (capped at `k`): each 24-row group gets the length
    /// its rows need, equal neighbours merge; dense rows give one group; short `k` is not
    /// scanned; rows of zeros (+0 and -0) need nothing.
    #[test]
    fn zero_tail_groups_follow_the_last_nonzero_column() {
        let (rows, k) = (60, 200);
        let mut a = vec![0.0f32; rows * k];
        for r in 0..rows {
            for c in 0..=(r + 150).min(k - 1) {
                a[r * k + c] = 1.0;
            }
        }
        // A zero inside a row's range does not shorten it.
        a[5 * k + 100] = 0.0;
        assert_eq!(
            groups(&a, k, rows, k),
            vec![(0, 24, 174), (24, 24, 198), (48, 12, 200)]
        );
        assert_eq!(
            groups(&vec![1.0f32; rows * k], k, rows, k),
            vec![(0, 60, 200)]
        );
        assert_eq!(groups(&a, k, rows, 100), vec![(0, 60, 100)]);
        let mut zeros = vec![0.0f32; rows * k];
        zeros[7 * k + 150] = -0.0;
        assert_eq!(groups(&zeros, k, rows, k), vec![(0, 60, 0)]);
    }
}
