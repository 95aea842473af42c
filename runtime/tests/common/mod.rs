//! Shared helpers of the CPU backend tests: feed one graph to the reference interpreter and to
//! the CPU executable (optimizer off and on, 1 and 2 threads), and compare the results.
//!
//! # Tolerances
//!
//! - [`Tol::Exact`]: bit for bit. Integers, bools and quantized blocks always; floats too (the
//!   sign of zero included), except that any NaN matches any NaN (the payload of a NaN is not
//!   part of the IR's semantics).
//! - [`Tol::Accum`]: for results that accumulate (sums, products, matmul, scatter-add): per
//!   element `|got - want| <= rel(dtype) * scale + ulp(dtype, want)`, where `scale` is the sum
//!   of the absolute values of the accumulated terms (computed by the interpreter on the graph
//!   with `abs` applied to every float source, see [`abs_graph`]) and `rel` is 1e-5 for f32,
//!   f16 and bf16 (accumulated in f32) and 1e-12 for f64: a backend may change the
//!   accumulation order. Block-quantized weights get the same bound: the backend multiplies
//!   them with f32 activations, as accurately as f32 products of the dequantized weights.
//!   Only with `KILN_Q8_ACTIVATIONS=1` ([`q8_activations`]), which makes few-row products
//!   quantize their activations to 8 bits, do graphs with block-quantized weights get 1/64
//!   ([`QUANTIZED_ACTIVATION_REL`]). Integers stay exact (wrapping sums do not depend on
//!   the order). Matmuls run split around the f32 micro-kernels (f32 accumulation, blocked
//!   order), so [`EXPECT_BIT_EXACT_ACCUMULATION`] is off and these bounds are what holds.
//! - [`Tol::Close`]: `|got - want| <= rel * |want| + abs` (fused patterns whose exact scale is
//!   awkward to state), also bit-exact while [`EXPECT_BIT_EXACT_ACCUMULATION`] holds.
#![allow(dead_code)]

use half::{bf16, f16};
use kiln_compiler::egraph::OptimizeOptions;
use kiln_compiler::{compile, Compiled};
use kiln_ir::interp::{run, Env};
use kiln_ir::numerics::wrap_int;
use kiln_ir::quant::QuantType;
use kiln_ir::{Bindings, DType, Graph, NodeId, Op, Storage, Tensor, UnaryOp};
use kiln_runtime::cpu::tensor_bytes;
use kiln_runtime::wgpu::{WgpuDevice, WgpuExecutable};
use kiln_runtime::{CpuError, CpuExecutable, CpuOptions};

/// Whether accumulations must also be bit-identical with the interpreter. They were while
/// every kernel accumulated in the interpreter's order (f64, row major); matmuls now run on
/// the f32 micro-kernels (and vector code reorders sums), so only the scale-aware bounds hold.
pub const EXPECT_BIT_EXACT_ACCUMULATION: bool = false;

/// What a graph is run on.
#[derive(Clone, Debug, Default)]
pub struct Feeds {
    /// Inputs by name.
    pub inputs: Vec<(String, Tensor)>,
    /// Params by name.
    pub params: Vec<(String, Tensor)>,
    /// States by name.
    pub states: Vec<(String, Tensor)>,
    /// Symbol values given explicitly (others are inferred from shapes).
    pub bindings: Bindings,
}

impl Feeds {
    /// Nothing yet.
    pub fn new() -> Feeds {
        Feeds::default()
    }

    /// Adds an input.
    pub fn input(mut self, name: &str, t: Tensor) -> Feeds {
        self.inputs.push((name.to_string(), t));
        self
    }

    /// Adds a param.
    pub fn param(mut self, name: &str, t: Tensor) -> Feeds {
        self.params.push((name.to_string(), t));
        self
    }

    /// Adds a state.
    pub fn state(mut self, name: &str, t: Tensor) -> Feeds {
        self.states.push((name.to_string(), t));
        self
    }

    /// Binds a symbol.
    pub fn bind(mut self, sym: &str, v: i64) -> Feeds {
        self.bindings.set(sym, v);
        self
    }

    /// The interpreter's environment.
    pub fn env(&self) -> Env {
        let mut env = Env::new().with_bindings(&self.bindings);
        for (n, t) in &self.inputs {
            env.set_input(n, t.clone());
        }
        for (n, t) in &self.params {
            env.set_param(n, t.clone());
        }
        for (n, t) in &self.states {
            env.set_state(n, t.clone());
        }
        env
    }
}

/// Outputs and new state values, by name.
#[derive(Clone, Debug)]
pub struct Results {
    /// Outputs, in the graph's order.
    pub outputs: Vec<(String, Tensor)>,
    /// New state values, in the graph's order.
    pub states: Vec<(String, Tensor)>,
}

impl Results {
    /// Every result: outputs, then states (named `state:NAME`).
    pub fn all(&self) -> Vec<(String, &Tensor)> {
        self.outputs
            .iter()
            .map(|(n, t)| (n.clone(), t))
            .chain(self.states.iter().map(|(n, t)| (format!("state:{n}"), t)))
            .collect()
    }
}

/// The interpreter's results (panics on an evaluation error: test graphs are valid).
pub fn interp(g: &Graph, f: &Feeds) -> Results {
    let out = run(g, &f.env()).unwrap_or_else(|e| panic!("interpreter: {e}"));
    Results {
        outputs: out.outputs,
        states: out.states,
    }
}

/// The optimizer settings for `optimize`.
pub fn opt(optimize: bool) -> Option<OptimizeOptions> {
    optimize.then(OptimizeOptions::default)
}

/// Compiles `g` with the optimizer off or on.
pub fn compiled(g: &Graph, optimize: bool) -> Compiled {
    compile(g, opt(optimize).as_ref()).unwrap_or_else(|e| panic!("compile: {e}"))
}

/// A CPU executable with the feeds' params loaded.
pub fn executable(c: &Compiled, threads: usize, f: &Feeds) -> Result<CpuExecutable, CpuError> {
    let mut exe = CpuExecutable::new(c, &CpuOptions { threads })?;
    for (n, t) in &f.params {
        exe.set_param(n, t)?;
    }
    Ok(exe)
}

/// What the tests need of an executable, CPU or wgpu.
pub trait Runs {
    /// Sets a state.
    fn set_state(&mut self, name: &str, t: &Tensor) -> Result<(), CpuError>;
    /// Runs once.
    fn run(
        &mut self,
        inputs: &[(&str, &Tensor)],
        b: &kiln_ir::Bindings,
    ) -> Result<Vec<(String, Tensor)>, CpuError>;
    /// A state's value.
    fn state(&self, name: &str) -> Option<Tensor>;
    /// The schedule.
    fn schedule(&self) -> &kiln_compiler::schedule::Schedule;
}

macro_rules! runs {
    ($t:ty) => {
        impl Runs for $t {
            fn set_state(&mut self, name: &str, t: &Tensor) -> Result<(), CpuError> {
                <$t>::set_state(self, name, t)
            }
            fn run(
                &mut self,
                inputs: &[(&str, &Tensor)],
                b: &kiln_ir::Bindings,
            ) -> Result<Vec<(String, Tensor)>, CpuError> {
                <$t>::run(self, inputs, b)
            }
            fn state(&self, name: &str) -> Option<Tensor> {
                <$t>::state(self, name)
            }
            fn schedule(&self) -> &kiln_compiler::schedule::Schedule {
                <$t>::schedule(self)
            }
        }
    };
}
runs!(CpuExecutable);
runs!(WgpuExecutable);

/// Sets the feeds' states and runs once on their inputs; new states are read back.
pub fn run_cpu(exe: &mut CpuExecutable, f: &Feeds) -> Result<Results, CpuError> {
    run_on(exe, f)
}

/// [`run_cpu`] on any executable.
pub fn run_on(exe: &mut impl Runs, f: &Feeds) -> Result<Results, CpuError> {
    for (n, t) in &f.states {
        exe.set_state(n, t)?;
    }
    let inputs: Vec<(&str, &Tensor)> = f.inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let outputs = exe.run(&inputs, &f.bindings)?;
    let states = exe
        .schedule()
        .state_updates
        .iter()
        .map(|(n, _)| {
            let t = exe
                .state(n)
                .unwrap_or_else(|| panic!("no value for state {n}"));
            (n.clone(), t)
        })
        .collect();
    Ok(Results { outputs, states })
}

/// How close a result must be (see the module docs).
#[derive(Clone, Debug)]
pub enum Tol {
    /// Bit for bit (any NaN matches any NaN).
    Exact,
    /// Accumulated results, each with the sum of the absolute values of its terms.
    Accum(Vec<f64>),
    /// Over the whole result, `||got - want|| <= rel * ||want||` (2-norms), every element
    /// finite where the expected one is: for results through block-quantized weights when
    /// the backend quantizes their activations to 8 bits per block ([`q8_activations`];
    /// about 0.4% per product, RMS).
    RelRms(f64),
    /// `|got - want| <= rel * |want| + abs`.
    Close {
        /// Relative part.
        rel: f64,
        /// Absolute part.
        abs: f64,
    },
}

/// One unit in the last place of `dt` at `x` (the larger one at a power of two).
pub fn ulp(dt: DType, x: f64) -> f64 {
    let (p, emin) = match dt {
        DType::F32 => (24, -126),
        DType::F16 => (11, -14),
        DType::BF16 => (8, -126),
        _ => (53, -1022),
    };
    let biased = ((x.abs().to_bits() >> 52) & 0x7ff) as i32;
    let e = (biased - 1023).max(emin);
    2f64.powi(e - (p - 1))
}

/// The relative accumulation tolerance of a float dtype (see the module docs).
fn accum_rel(dt: DType) -> f64 {
    match dt {
        // f16/bf16 products accumulate in f32 on the micro-kernels.
        DType::F32 | DType::F16 | DType::BF16 => 1e-5,
        DType::F64 => 1e-12,
        _ => 0.0,
    }
}

/// With [`q8_activations`], a matmul with a block-quantized weight and few rows quantizes
/// its activations to 8 bits per block (Q8_0/Q8_K, as llama.cpp does): each term may be
/// off by half a quantization step, so the bound of such results is 1/64 of their scale
/// instead of [`accum_rel`].
pub const QUANTIZED_ACTIVATION_REL: f64 = 1.0 / 64.0;

/// Whether the backend under test quantizes the activations of few-row products with
/// block-quantized weights to 8 bits (the runtime's `KILN_Q8_ACTIVATIONS=1` switch).
/// Otherwise those products are exact to f32 rounding.
pub use kiln_runtime::cpu::q8_activations;

/// The same value, bit for bit (floats: NaN matches NaN, zeros by sign).
fn same_float(g: f64, w: f64) -> bool {
    (g.is_nan() && w.is_nan()) || g.to_bits() == w.to_bits()
}

thread_local! {
    /// Set while comparing results of the WGSL backend ([`wgsl_extra`] widens every float
    /// bound).
    pub static WGSL_TOLERANCE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// What the WGSL backend may add to a float result's bound: the platform's transcendental
/// functions and division are within a few ulp rather than correctly rounded, and f64 values
/// are computed in f32: `2e-5 * |want| + 1e-6` for f32 and f64 results, two ulp of the
/// dtype for f16 and bf16 (an f32 result a few ulp off can round to a neighbouring value).
pub fn wgsl_extra(dt: DType, want: f64) -> f64 {
    match dt {
        DType::F16 => 2.0 * ulp(dt, want),
        DType::BF16 => 2.0 * ulp(dt, want) + f32::MIN_POSITIVE as f64,
        // f32 subnormal results may be flushed to zero.
        _ => 2e-5 * want.abs() + 1e-6 + f32::MIN_POSITIVE as f64,
    }
}

/// Compares `got` with `want`; returns the largest deviation in units of the bound (0 when
/// bit-identical).
pub fn compare(got: &Tensor, want: &Tensor, tol: &Tol) -> Result<f64, String> {
    if got.dtype() != want.dtype() || got.shape() != want.shape() {
        return Err(format!(
            "got {}{:?}, expected {}{:?}",
            got.dtype(),
            got.shape(),
            want.dtype(),
            want.shape()
        ));
    }
    let dt = want.dtype();
    if !dt.is_float() {
        return if tensor_bytes(got) == tensor_bytes(want) {
            Ok(0.0)
        } else {
            let (g, w) = (tensor_bytes(got), tensor_bytes(want));
            let size = dt.size_bytes().unwrap_or(1);
            let i = g.iter().zip(&w).position(|(a, b)| a != b).unwrap_or(0) / size;
            Err(format!(
                "not bit-identical, first at element {i}\ngot  {got:?}\nwant {want:?}"
            ))
        };
    }
    let (g, w) = (got.to_f64_vec().unwrap(), want.to_f64_vec().unwrap());
    if let Tol::RelRms(rel) = tol {
        let mut err = 0.0;
        let mut norm = 0.0;
        for (i, (&g, &w)) in g.iter().zip(&w).enumerate() {
            if w.is_finite() != g.is_finite() {
                return Err(format!("element {i}: got {g:e}, expected {w:e}"));
            }
            if w.is_finite() {
                err += (g - w) * (g - w);
                norm += w * w;
            }
        }
        let r = (err / norm.max(f64::MIN_POSITIVE)).sqrt();
        return if r <= *rel {
            Ok(r / rel)
        } else {
            Err(format!("relative RMS error {r:e} above {rel:e}"))
        };
    }
    let mut worst = 0.0f64;
    for (i, (&g, &w)) in g.iter().zip(&w).enumerate() {
        if same_float(g, w) {
            continue;
        }
        let mut bound = match tol {
            Tol::Exact => 0.0,
            // The WGSL backend accumulates f64 in f32.
            Tol::Accum(scale) if WGSL_TOLERANCE.with(|c| c.get()) => {
                accum_rel(DType::F32) * scale[i].abs() + ulp(dt, w)
            }
            Tol::Accum(scale) => accum_rel(dt) * scale[i] + ulp(dt, w),
            Tol::Close { rel, abs } => rel * w.abs() + abs,
            Tol::RelRms(_) => unreachable!("handled above"),
        };
        let wgsl = WGSL_TOLERANCE.with(|c| c.get());
        if wgsl {
            bound += wgsl_extra(dt, w);
        }
        let ok = g.is_finite() && w.is_finite() && (g - w).abs() <= bound;
        let exact_required = !wgsl && (matches!(tol, Tol::Exact) || EXPECT_BIT_EXACT_ACCUMULATION);
        if !ok || exact_required {
            return Err(format!(
                "element {i}: got {g:e} ({:#x}), expected {w:e} ({:#x}), bound {bound:e}{}",
                g.to_bits(),
                w.to_bits(),
                if ok {
                    " (within the bound, but not bit-identical as expected today)"
                } else {
                    ""
                }
            ));
        }
        worst = worst.max((g - w).abs() / bound);
    }
    Ok(worst)
}

/// Checks every output and state of `got` against `want`.
pub fn compare_results(
    label: &str,
    got: &Results,
    want: &Results,
    tol: &dyn Fn(&str) -> Tol,
) -> Result<(), String> {
    let (g, w) = (got.all(), want.all());
    if g.len() != w.len() {
        return Err(format!(
            "{label}: {} results, expected {}",
            g.len(),
            w.len()
        ));
    }
    for (wn, wt) in &w {
        let Some((_, gt)) = g.iter().find(|(gn, _)| gn == wn) else {
            return Err(format!("{label}: no result {wn}"));
        };
        compare(gt, wt, &tol(wn)).map_err(|e| format!("{label}: {wn}: {e}"))?;
    }
    Ok(())
}

/// [`compare_results`] with the WGSL backend's bounds ([`wgsl_extra`]).
pub fn compare_results_wgsl(
    label: &str,
    got: &Results,
    want: &Results,
    tol: &dyn Fn(&str) -> Tol,
) -> Result<(), String> {
    WGSL_TOLERANCE.with(|c| c.set(true));
    let r = compare_results(label, got, want, tol);
    WGSL_TOLERANCE.with(|c| c.set(false));
    r
}

/// The test configurations: optimizer off and on, 1 and 2 threads.
pub const CONFIGS: [(bool, usize); 4] = [(false, 1), (false, 2), (true, 1), (true, 2)];

/// Runs `g` on the interpreter and on the CPU backend in every configuration, once per entry
/// of `runs` (one compilation per configuration: symbolic dims are bound per run), and
/// compares every output and state. `tol` gives the tolerance per result name and run.
pub fn check_runs(label: &str, g: &Graph, runs: &[Feeds], tol: &dyn Fn(&str, usize) -> Tol) {
    let wants: Vec<Results> = runs.iter().map(|f| interp(g, f)).collect();
    for optimize in [false, true] {
        let c = compiled(g, optimize);
        for threads in [1, 2] {
            let cfg = format!("{label} (optimize {optimize}, threads {threads})");
            let mut exe = executable(&c, threads, &runs[0])
                .unwrap_or_else(|e| panic!("{cfg}: executable: {e}"));
            for (i, (f, want)) in runs.iter().zip(&wants).enumerate() {
                if i > 0 {
                    // Runs may bring other weights: reloading must take effect.
                    for (n, t) in &f.params {
                        exe.set_param(n, t)
                            .unwrap_or_else(|e| panic!("{cfg}: set_param {n}: {e}"));
                    }
                }
                let got = run_cpu(&mut exe, f)
                    .unwrap_or_else(|e| panic!("{cfg}: run {i} ({:?}): {e}", f.bindings));
                compare_results(&format!("{cfg} run {i}"), &got, want, &|n| tol(n, i))
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }
    if let Some(device) = wgpu_device().filter(|_| wgsl_comparable(g, runs, &wants)) {
        for optimize in [false, true] {
            let c = compiled(g, optimize);
            let cfg = format!("{label} (wgsl, optimize {optimize})");
            let mut exe = WgpuExecutable::new(&c, device.clone())
                .unwrap_or_else(|e| panic!("{cfg}: executable: {e}"));
            for (i, (f, want)) in runs.iter().zip(&wants).enumerate() {
                for (n, t) in &f.params {
                    exe.set_param(n, t)
                        .unwrap_or_else(|e| panic!("{cfg}: set_param {n}: {e}"));
                }
                let got = run_on(&mut exe, f)
                    .unwrap_or_else(|e| panic!("{cfg}: run {i} ({:?}): {e}", f.bindings));
                compare_results_wgsl(&format!("{cfg} run {i}"), &got, want, &|n| tol(n, i))
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }
}

/// Whether the WGSL backend's results can be held to the interpreter's for `g` on `runs`
/// (see the module docs): every i64 and u32 value fed or expected fits in i32 (the backend
/// holds them in 32 bits), and no result of an op the GPU computes within a few ulp rather
/// than correctly rounded (exp, log, sin, cos, tanh, erf, pow, division, square roots) feeds
/// another such op or one that turns a tiny difference into a large one (comparisons,
/// floor, ceil, round, float-to-integer casts, modulo); every f64 value fits f32's range
/// (f64 is computed in f32); and where the graph accumulates (reductions, matmuls), every
/// float fed is finite and at most 1e18 in magnitude (an f32 accumulator overflows where the
/// interpreter's f64 one does not); and where it takes a sine or cosine, every float fed
/// is below 2^16 in magnitude (the argument reduction is Cody-Waite's in f32); no float fed
/// is subnormal in f32 (GPUs may flush them); products of a reduction get inputs of at most
/// 16 in magnitude (an f32 product overflows long before an f64 one).
pub fn wgsl_comparable(g: &Graph, runs: &[Feeds], wants: &[Results]) -> bool {
    use kiln_ir::BinaryOp as B;
    let accumulates = g
        .nodes()
        .iter()
        .any(|n| matches!(n.op, Op::Reduce { .. } | Op::MatMul { .. }));
    let prod = g.nodes().iter().any(|n| {
        matches!(
            n.op,
            Op::Reduce {
                op: kiln_ir::ReduceOp::Prod,
                ..
            }
        )
    });
    let trig = g
        .nodes()
        .iter()
        .any(|n| matches!(n.op, Op::Unary(UnaryOp::Sin | UnaryOp::Cos)));
    let fits = |t: &Tensor| {
        let dt = t.dtype();
        let Ok(v) = t.to_f64_vec() else {
            return true;
        };
        let all = |f: &dyn Fn(f64) -> bool| v.iter().all(|&x| f(x));
        if matches!(dt, DType::I64 | DType::U32) {
            return all(&|x| x >= i32::MIN as f64 && x <= i32::MAX as f64);
        }
        if !dt.is_float() {
            return true;
        }
        all(&|x| !x.is_finite() || x.abs() <= f32::MAX as f64)
            && all(&|x| x == 0.0 || x.abs() >= f32::MIN_POSITIVE as f64)
            // An f32 accumulator overflows (then meets an infinity: NaN) where an f64 does not.
            && (!accumulates || all(&|x| x.is_finite() && x.abs() <= 1e18))
            && (!prod || all(&|x| x.abs() <= 16.0))
            // sin and cos reduce their argument by 2 pi in f32 (Cody-Waite): exact enough for
            // |x| < 2^16, not for the huge values the edge cases hold.
            && (!trig || all(&|x| !x.is_finite() || x.abs() < 65536.0))
    };
    for f in runs {
        let all = f.inputs.iter().chain(&f.params).chain(&f.states);
        if !all.into_iter().all(|(_, t)| fits(t)) {
            return false;
        }
    }
    for w in wants {
        if !w.outputs.iter().chain(&w.states).all(|(_, t)| fits(t)) {
            return false;
        }
    }
    let inexact_op = |op: &Op| match op {
        Op::Unary(u) => matches!(
            u,
            UnaryOp::Exp
                | UnaryOp::Log
                | UnaryOp::Sin
                | UnaryOp::Cos
                | UnaryOp::Tanh
                | UnaryOp::Erf
                | UnaryOp::Sqrt
                | UnaryOp::Rsqrt
                | UnaryOp::Recip
        ),
        Op::Binary(b) => matches!(b, B::Pow | B::Div),
        _ => false,
    };
    let amplifies = |op: &Op, dt: DType| match op {
        Op::Unary(u) => matches!(u, UnaryOp::Floor | UnaryOp::Ceil | UnaryOp::Round),
        Op::Binary(b) => b.is_comparison() || *b == B::Mod,
        Op::Cast { .. } => !dt.is_float(),
        _ => false,
    };
    let mut inexact = vec![false; g.nodes().len()];
    for (i, n) in g.nodes().iter().enumerate() {
        let tainted = n.inputs.iter().any(|x| inexact[x.index()]);
        if tainted && (inexact_op(&n.op) || amplifies(&n.op, n.ty.dtype)) {
            return false;
        }
        inexact[i] = tainted || inexact_op(&n.op);
    }
    true
}

/// The wgpu device the tests also run every graph on: `None` (the WGSL pass skipped) when
/// `KILN_TEST_WGPU=0` or when no adapter exists outside CI; in CI (`CI` set) an adapter is
/// required (`.ci/run` installs lavapipe).
pub fn wgpu_device() -> Option<std::sync::Arc<WgpuDevice>> {
    if std::env::var("KILN_TEST_WGPU").is_ok_and(|v| v == "0") {
        return None;
    }
    match WgpuDevice::shared() {
        Ok(d) => Some(d),
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must provide a Vulkan driver for the WGSL tests (mesa-vulkan-drivers): {e}"
            );
            eprintln!("WGSL tests skipped: {e}");
            None
        }
    }
}

/// [`check_runs`] with one run and one tolerance for every result.
pub fn check(label: &str, g: &Graph, f: &Feeds, tol: Tol) {
    check_runs(label, g, std::slice::from_ref(f), &|_, _| tol.clone());
}

/// `g` with `abs` applied to every float source (inputs, params, states, constants, fills;
/// block-quantized sources are dequantized to f32 first): where the graph accumulates those
/// sources directly (a sum, a matmul, a scatter-add), its results are then the sums of the
/// absolute values of the terms, the scale of [`Tol::Accum`].
pub fn abs_graph(g: &Graph) -> Graph {
    let mut out = Graph::new();
    let mut map: Vec<NodeId> = Vec::new();
    for n in g.nodes() {
        let inputs: Vec<NodeId> = n.inputs.iter().map(|i| map[i.index()]).collect();
        let source = matches!(
            n.op,
            Op::Input { .. }
                | Op::Param { .. }
                | Op::State { .. }
                | Op::Constant { .. }
                | Op::Full { .. }
        );
        let mut id = out
            .push(n.op.clone(), inputs)
            .unwrap_or_else(|e| panic!("abs graph: {e}"));
        let dt = out.ty(id).dtype;
        if source && dt.is_quantized() {
            id = out.cast(id, DType::F32).unwrap();
        }
        if source && out.ty(id).dtype.is_float() {
            id = out.unary(UnaryOp::Abs, id).unwrap();
        }
        map.push(id);
    }
    for (name, id) in g.outputs() {
        out.set_output(name, map[id.index()]).unwrap();
    }
    for (name, id) in g.state_updates() {
        out.set_state_update(name, map[id.index()]).unwrap();
    }
    out
}

/// The scale of every result for [`Tol::Accum`] (see [`abs_graph`]), by result name.
pub fn accum_scales(g: &Graph, f: &Feeds) -> Vec<(String, Vec<f64>)> {
    let r = interp(&abs_graph(g), f);
    // Quantized weights with 8-bit activations: widen the scale so that
    // `accum_rel * scale` is `QUANTIZED_ACTIVATION_REL * scale` (f32 results).
    let quantized = q8_activations()
        && g.nodes()
            .iter()
            .any(|n| matches!(n.ty.dtype, DType::Quant(_)));
    let widen = if quantized {
        QUANTIZED_ACTIVATION_REL / accum_rel(DType::F32)
    } else {
        1.0
    };
    r.all()
        .into_iter()
        .map(|(n, t)| {
            let v = if t.dtype().is_float() {
                t.to_f64_vec().unwrap().iter().map(|x| x * widen).collect()
            } else {
                vec![0.0; t.numel()]
            };
            (n, v)
        })
        .collect()
}

// ---- values ----

/// A small deterministic generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Float values every float test should see: signed zeros, infinities, NaN, ties for
/// `round`, subnormals, the extremes of f32 and f16.
pub const FLOAT_EDGES: [f64; 24] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    -0.5,
    1.5,
    2.5,
    -2.5,
    3.0,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    3.4028234663852886e38,
    1.1754943508222875e-38,
    1e-45,
    -1e-40,
    65504.0,
    70000.0,
    6e-8,
    -7.0,
    0.1,
    100.0,
    1e30,
];

/// Integer values every integer test should see (wrapped to the dtype).
pub const INT_EDGES: [i64; 14] = [
    0,
    1,
    -1,
    2,
    -2,
    7,
    -7,
    127,
    -128,
    255,
    i64::MIN,
    i64::MAX,
    i64::MIN + 1,
    1 << 40,
];

/// A tensor of `dt` from f64 values (floats rounded, integers truncated and wrapped, bools
/// `!= 0`).
pub fn tensor_f64(dt: DType, shape: &[usize], v: &[f64]) -> Tensor {
    let ints = || v.iter().map(|&x| wrap_int(dt, x as i64));
    let storage = match dt {
        DType::F32 => Storage::F32(v.iter().map(|&x| x as f32).collect()),
        DType::F16 => Storage::F16(v.iter().map(|&x| f16::from_f64(x)).collect()),
        DType::BF16 => Storage::BF16(v.iter().map(|&x| bf16::from_f64(x)).collect()),
        DType::F64 => Storage::F64(v.to_vec()),
        DType::Bool => Storage::Bool(v.iter().map(|&x| x != 0.0).collect()),
        _ => return tensor_i64(dt, shape, &ints().collect::<Vec<_>>()),
    };
    Tensor::new(shape.to_vec(), storage).unwrap()
}

/// A tensor of an integer or bool `dt` from i64 values (wrapped; bools `!= 0`).
pub fn tensor_i64(dt: DType, shape: &[usize], v: &[i64]) -> Tensor {
    let w = |x: i64| wrap_int(dt, x);
    let storage = match dt {
        DType::I8 => Storage::I8(v.iter().map(|&x| w(x) as i8).collect()),
        DType::I16 => Storage::I16(v.iter().map(|&x| w(x) as i16).collect()),
        DType::I32 => Storage::I32(v.iter().map(|&x| w(x) as i32).collect()),
        DType::I64 => Storage::I64(v.to_vec()),
        DType::U8 => Storage::U8(v.iter().map(|&x| w(x) as u8).collect()),
        DType::U32 => Storage::U32(v.iter().map(|&x| w(x) as u32).collect()),
        DType::Bool => Storage::Bool(v.iter().map(|&x| x != 0).collect()),
        d => return tensor_f64(d, shape, &v.iter().map(|&x| x as f64).collect::<Vec<_>>()),
    };
    Tensor::new(shape.to_vec(), storage).unwrap()
}

/// Random values of `dt`: for floats mostly uniform in `[-scale, scale)` with every
/// [`FLOAT_EDGES`] value mixed in when `edges`; for integers values over the whole range of
/// the dtype, small ones and [`INT_EDGES`]; bools at random. Quantized types get random
/// blocks ([`quant_tensor`]).
pub fn random(dt: DType, shape: &[usize], rng: &mut Rng, scale: f64, edges: bool) -> Tensor {
    let n: usize = shape.iter().product();
    if let DType::Quant(q) = dt {
        return quant_tensor(q, shape, rng);
    }
    if dt.is_float() {
        let v: Vec<f64> = (0..n)
            .map(|i| {
                if edges && (i % 3 == 1 || rng.below(4) == 0) {
                    FLOAT_EDGES[rng.below(FLOAT_EDGES.len() as u64) as usize]
                } else {
                    rng.uniform(-scale, scale)
                }
            })
            .collect();
        return tensor_f64(dt, shape, &v);
    }
    let v: Vec<i64> = (0..n)
        .map(|i| match (edges, rng.below(3)) {
            (true, 0) => INT_EDGES[(i + rng.below(3) as usize) % INT_EDGES.len()],
            (_, 1) => rng.next_u64() as i64,
            _ => rng.below(19) as i64 - 9,
        })
        .collect();
    tensor_i64(dt, shape, &v)
}

/// Random finite floats of `dt` in `[-scale, scale)`.
pub fn uniform(dt: DType, shape: &[usize], rng: &mut Rng, scale: f64) -> Tensor {
    random(dt, shape, rng, scale, false)
}

/// Byte offsets of the f16 scale fields (`d`, `dmin`/`m`) of a block of `q` (Q8_K has an
/// f32 `d` at 0): random bytes there would give NaN, infinite or enormous values.
fn scale_fields(q: QuantType) -> (&'static [usize], bool) {
    match q {
        QuantType::Q8_K => (&[0], true),
        q => (q.f16_scale_offsets(), false),
    }
}

/// A random tensor of block-quantized `q` (shape's last axis a multiple of the block size):
/// random quants, scales drawn from `[2^-10, 2^-6]` in magnitude (either sign).
pub fn quant_tensor(q: QuantType, shape: &[usize], rng: &mut Rng) -> Tensor {
    let n: usize = shape.iter().product();
    let blocks = n / q.block_size();
    let mut bytes: Vec<u8> = (0..blocks * q.block_bytes())
        .map(|_| rng.next_u64() as u8)
        .collect();
    let (fields, f32_scale) = scale_fields(q);
    for b in 0..blocks {
        for &off in fields {
            let at = b * q.block_bytes() + off;
            let mag = 2f64.powf(rng.uniform(-10.0, -6.0));
            let v = if rng.below(4) == 0 { -mag } else { mag };
            if f32_scale {
                bytes[at..at + 4].copy_from_slice(&(v as f32).to_le_bytes());
            } else {
                bytes[at..at + 2].copy_from_slice(&f16::from_f64(v).to_le_bytes());
            }
        }
    }
    Tensor::quantized(q, shape.to_vec(), bytes).unwrap()
}

/// [`check_runs`] with [`Tol::Accum`] for every result (scales from [`accum_scales`]).
pub fn check_accum(label: &str, g: &Graph, runs: &[Feeds]) {
    let scales: Vec<Vec<(String, Vec<f64>)>> = runs.iter().map(|f| accum_scales(g, f)).collect();
    check_runs(label, g, runs, &|name, i| {
        let s = scales[i].iter().find(|(n, _)| n == name).expect("scale");
        Tol::Accum(s.1.clone())
    });
}

/// [`check_runs`] with [`Tol::Accum`] for the results `accum` names, [`Tol::Exact`] for the
/// others.
pub fn check_mixed(label: &str, g: &Graph, runs: &[Feeds], accum: &dyn Fn(&str) -> bool) {
    let scales: Vec<Vec<(String, Vec<f64>)>> = runs.iter().map(|f| accum_scales(g, f)).collect();
    check_runs(label, g, runs, &|name, i| {
        if accum(name) {
            let s = scales[i].iter().find(|(n, _)| n == name).expect("scale");
            Tol::Accum(s.1.clone())
        } else {
            Tol::Exact
        }
    });
}

/// [`check_runs`] with one tolerance for every result of every run.
pub fn check_all(label: &str, g: &Graph, runs: &[Feeds], tol: Tol) {
    check_runs(label, g, runs, &|_, _| tol.clone());
}

// ---- nn modules ----

/// Random weights for every parameter of a module: uniform in `[-scale, scale)`, plus 1 for
/// norm weights (`*norm*.weight`), in the dtype the spec declares (or the one `dtype_of`
/// gives, e.g. a quantized type).
pub fn module_weights(
    m: &impl kiln_nn::Module,
    rng: &mut Rng,
    scale: f64,
    dtype_of: &dyn Fn(&str) -> Option<DType>,
) -> Vec<(String, Tensor)> {
    m.param_specs()
        .iter()
        .map(|spec| {
            let shape: Vec<usize> = spec
                .shape
                .as_consts()
                .expect("constant weight shape")
                .iter()
                .map(|&d| d as usize)
                .collect();
            let dt = dtype_of(&spec.name).unwrap_or(spec.dtype);
            let t = if spec.name.contains("norm") && spec.name.ends_with(".weight") {
                let n: usize = shape.iter().product();
                let v: Vec<f64> = (0..n).map(|_| 1.0 + rng.uniform(-scale, scale)).collect();
                tensor_f64(dt, &shape, &v)
            } else {
                random(dt, &shape, rng, scale, false)
            };
            (spec.name.clone(), t)
        })
        .collect()
}

/// Zero tensors for every state of a module (the empty KV caches before a prompt), with the
/// symbolic batch dim (if any) at `batch`.
pub fn zero_states(m: &impl kiln_nn::Module, batch: i64) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    m.visit_states(&mut |s| {
        let b = Bindings::new().with("batch", batch);
        let shape: Vec<usize> = s
            .shape()
            .dims()
            .iter()
            .map(|d| d.eval(&b).expect("state dims") as usize)
            .collect();
        let n = shape.iter().product::<usize>();
        out.push((
            s.name().to_string(),
            tensor_f64(s.dtype(), &shape, &vec![0.0; n]),
        ));
    });
    out
}

/// Consecutive chunks of `sizes` tokens for a cached model with input `x: [1, seq, width]`:
/// uniform inputs, `past` bound to the tokens before each chunk.
pub fn cache_steps(sizes: &[usize], width: usize, rng: &mut Rng) -> Vec<Feeds> {
    let mut past = 0;
    sizes
        .iter()
        .map(|&s| {
            let f = Feeds::new()
                .input("x", uniform(DType::F32, &[1, s, width], rng, 2.0))
                .bind("past", past);
            past += s as i64;
            f
        })
        .collect()
}

/// Decodes step by step: `steps` gives each step's feeds (inputs and `past` binding); the
/// interpreter gets the previous step's interpreter states, the CPU executable keeps its own
/// (updated by the runtime). Outputs and states are compared after every step with `tol`, in
/// every configuration.
pub fn check_decode(
    label: &str,
    g: &Graph,
    params: &[(String, Tensor)],
    states: &[(String, Tensor)],
    steps: &[Feeds],
    tol: &dyn Fn(&str) -> Tol,
) {
    // The interpreter's trajectory.
    let mut wants = Vec::new();
    let mut cur: Vec<(String, Tensor)> = states.to_vec();
    for s in steps {
        let mut f = s.clone();
        f.params = params.to_vec();
        f.states = cur.clone();
        let r = interp(g, &f);
        for (n, t) in &r.states {
            let slot = cur.iter_mut().find(|(m, _)| m == n).expect("state");
            slot.1 = t.clone();
        }
        wants.push(r);
    }
    for (optimize, threads) in CONFIGS {
        let c = compiled(g, optimize);
        let cfg = format!("{label} (optimize {optimize}, threads {threads})");
        let mut exe = CpuExecutable::new(&c, &CpuOptions { threads }).unwrap();
        for (n, t) in params {
            exe.set_param(n, t).unwrap();
        }
        for (n, t) in states {
            exe.set_state(n, t).unwrap();
        }
        for (i, (s, want)) in steps.iter().zip(&wants).enumerate() {
            // States are not set again: the executable carries them from step to step.
            let mut f = s.clone();
            f.states.clear();
            let got = run_cpu(&mut exe, &f)
                .unwrap_or_else(|e| panic!("{cfg}: step {i} ({:?}): {e}", f.bindings));
            compare_results(&format!("{cfg} step {i}"), &got, want, tol)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// Asserts that every state update of `g` (KV-cache writes) is done in place, with and
/// without the optimizer: the update kernel writes only the new slice into the state's own
/// buffer (and [`check_decode`] on such a graph runs that path).
pub fn assert_updates_in_place(g: &Graph) {
    for optimize in [false, true] {
        let c = compiled(g, optimize);
        for (name, _) in g.state_updates() {
            assert!(
                c.schedule.updated_in_place(name),
                "state `{name}` not updated in place (optimize {optimize})"
            );
        }
    }
}

/// The kernels a compiled graph launches per run, by kind.
pub fn launch_kinds(c: &Compiled) -> Vec<kiln_compiler::loop_ir::KernelKind> {
    c.schedule
        .launches
        .iter()
        .map(|l| c.schedule.kernels[l.kernel].kind)
        .collect()
}
