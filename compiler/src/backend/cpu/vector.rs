//! SIMD code for innermost loops (a child of [`super`]: the scalar emitter's helpers are
//! reused for addresses, loop-invariant values and the remainder).
//!
//! # What is vectorized
//!
//! `plan` decides, from the loop IR alone, whether an innermost loop (no nested loop, no
//! `if`) gets vector code; the code generator asks it for every loop it reaches, and
//! [`vectorized_loops`] counts the loops of a kernel it accepts. The loop's
//! [`LoopAnnot::vector`](crate::loop_ir::LoopAnnot) hint is not needed: legality decides.
//! Constant extents below 4 stay scalar; symbolic extents are checked at run time.
//!
//! - **Elementwise**: a `Parallel` loop whose body is `let`/`declare`/`store` statements.
//!   Every store is contiguous in the loop variable (stride 1). Every load has stride 1
//!   (a vector load) or stride 0 (loop-invariant: a broadcast scalar). Bool loads (one byte
//!   per element: attention's causal mask) are vectorized only as plain stride-1 loads
//!   outside `select` arms: four bytes widened into a lane mask.
//! - **Reductions**: a `Reduction` loop whose body is `let`s then one
//!   `acc = op(acc, term)` with `acc` declared outside: `add` on f64 (the row sums of
//!   softmax, RMSNorm, LayerNorm: `add.f64(acc, cast.f64(<f32 expr>))`), on i64 or i32;
//!   `max`/`min` on f32, f64, i32, i64. A sum may also store (contiguously, values that do
//!   not read the accumulator): softmax's sum phase stores its exps for the normalizing loop
//!   ([`crate::loop_ir::reuse`]).
//!
//! # Values
//!
//! One vector covers 4 consecutive iterations (lanes) of the loop; the main loop runs
//! [`GROUPS`] vectors per trip (measured faster than one: independent work, and more
//! accumulators for reductions), one more vector runs when 4 to 7 iterations are left, and
//! a scalar loop (the ordinary scalar code of the same body) runs the last `n mod 4`. Four
//! lanes of a dtype are held as: f32 one `f32x4`, i32 one `i32x4`, f64 two `f64x2` (lanes
//! 0-1, 2-3), i64 two `i64x2`, bool one `i32x4` mask (all ones or zero per lane).
//! Cranelift's vectors are at most 128 bits.
//!
//! Every sub-expression that does not depend on the loop variable (and, inside a `select`
//! arm, reads no memory) is computed once by the scalar code before the vector loop and
//! broadcast: a norm's `rsqrt(mean + eps)`, a row's maximum, constants, loads at a fixed
//! index, the row index of an embedding lookup (`bind`).
//!
//! # Numerics
//!
//! Each lane computes what the scalar code computes, bit for bit: `+ - * /`, `sqrt`,
//! `floor`/`ceil`/round-to-even, comparisons, f32 <-> f64 conversions, i32 <-> f32
//! conversions and integer arithmetic are the same IEEE / two's-complement operations;
//! `min`/`max` use the interpreter's rule (NaN if either operand is NaN, else the first
//! operand on ties) through compares and selects; `rsqrt` is `1 / sqrt` in f64 rounded once;
//! `exp` and `tanh` of f32 values run [`math`]'s f64 algorithms on `f64x2` halves (the same
//! operations as the scalar code, so within 1 ulp of the interpreter like it); a vector of
//! `exp` arguments all below the algorithm's lower clamp (masked attention scores, -inf)
//! skips the polynomial and gives the +0 it would have computed.
//!
//! Reductions are the exception: vector accumulators (per lane, [`GROUPS`] x 4 lanes) are
//! combined at the end, so an **f64 sum adds its terms in another order** than the
//! sequential reference. Each term is exact in f64 when it is a cast f32, and the f64 sum
//! then differs from the sequential f64 sum by a few f64 ulps of the sum of `|terms|`, far
//! below the final f32 rounding: results agree with the interpreter within f32 accumulation
//! error (not always bit for bit). Integer sums, and `max`/`min` of any dtype, are exact
//! whatever the order, with one subtlety handled: ties between `+0` and `-0` keep the first
//! in sequence order, which lanes cannot know, so when a float `max`/`min` ends at zero the
//! whole reduction is recomputed by the scalar loop.
//!
//! # Memory safety
//!
//! A load outside any `select` arm runs in every scalar iteration, so it is in bounds for
//! every lane. Loads inside `select` arms (lazy in the IR: pad, concat and slice-update guard
//! out-of-range loads with them) are evaluated eagerly here and so are *checked*: a vector
//! load when all four elements lie inside the buffer, else lane by lane, loading only
//! in-range elements (the others are zero and discarded by the select). A load whose index
//! depends on data (an embedding row) is checked the same way, its slow path clamping and
//! setting the status flag exactly as the scalar code does. Loads of a buffer the loop stores
//! to must read the element being stored.
//!
//! # Falls back to scalar
//!
//! Anything else keeps the loop scalar: f16/bf16 and u8/u32/i8/i16/bool buffers;
//! transcendental functions other than f32 `exp`/`tanh` (`log`, `erf`, `sin`, `pow`, ...),
//! float `mod`, integer division; i64 -> f32 and f64 -> int casts; strided (non-unit,
//! non-zero) or data-dependent store indices and strided loads; gathers (a `bind` whose
//! value depends on the loop variable), a data-dependent load inside a `select` arm,
//! block-quantized loads; `if`, nested and serial loops; reductions of other shapes (f32
//! sums, products, a float `min`/`max` with the accumulator second).

use super::{CodegenError, Emitter};
use crate::backend::cpu::math;
use crate::backend::cpu::parallel::parallel_nest;
use crate::loop_ir::{BufferId, Expr, Kernel, Loop, LoopKind, Stmt};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    types, ConstantData, Endianness, Function, InstBuilder, MemFlagsData, Type, UserFuncName, Value,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_module::Module;
use kiln_ir::{BinaryOp, DType, Dim, UnaryOp};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Lanes per vector iteration.
pub const LANES: i64 = 4;

/// Vector iterations per trip of the main loop (independent accumulators for reductions).
pub const GROUPS: i64 = 2;

thread_local! {
    static SCALAR_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with vector code generation off on this thread: kernels compiled inside `f` get
/// only the scalar code (the JIT cache keeps the two forms apart). For comparing the vector
/// path with the scalar path, which it matches bit for bit except in reduction order.
pub fn scalar_only<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SCALAR_ONLY.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(SCALAR_ONLY.with(|c| c.replace(true)));
    f()
}

/// False inside [`scalar_only`].
pub fn enabled() -> bool {
    !SCALAR_ONLY.with(|c| c.get())
}

/// How many loops of `kernel` the code generator vectorizes (see the module docs).
pub fn vectorized_loops(kernel: &Kernel) -> usize {
    let kernel = &*super::cpu_form(kernel);
    let nest = parallel_nest(kernel);
    let mut data = HashSet::new();
    match nest.last() {
        None => count(kernel, &kernel.body, &mut data),
        Some(l) if nest.len() == 1 && plan(kernel, l, &data).is_some() => 1,
        Some(l) => count(kernel, &l.body, &mut data),
    }
}

fn count(kernel: &Kernel, body: &[Stmt], data: &mut HashSet<String>) -> usize {
    let mut n = 0;
    for s in body {
        match s {
            Stmt::Loop(l) => {
                if plan(kernel, l, data).is_some() {
                    n += 1;
                }
                n += count(kernel, &l.body, data);
            }
            Stmt::Let { var, dtype, value }
            | Stmt::Declare {
                var,
                dtype,
                init: value,
            } if dtype.is_int() && value.may_read_memory() => {
                data.insert(var.clone());
            }
            Stmt::If { then, .. } => n += count(kernel, then, data),
            _ => {}
        }
    }
    n
}

/// The Cranelift IR text of `kernel`'s function before optimization, for the host target
/// (for tests and inspection).
pub fn clif_text(kernel: &Kernel) -> Result<String, CodegenError> {
    let kernel = &*super::cpu_form(kernel);
    let err = |message: String| CodegenError::Cranelift {
        kernel: kernel.name.clone(),
        message,
    };
    let isa = super::super::jit::host_isa().map_err(err)?;
    let builder =
        cranelift_jit::JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
    let mut module = cranelift_jit::JITModule::new(builder);
    let sig = super::kernel_signature(&module);
    let mut func = Function::with_name_signature(UserFuncName::user(0, 0), sig);
    let mut fctx = FunctionBuilderContext::new();
    {
        let b = FunctionBuilder::new(&mut func, &mut fctx);
        let mut e = Emitter::new(b, &mut module, kernel);
        e.emit_kernel()?;
        let Emitter { b, .. } = e;
        b.finalize(module.target_config());
    }
    Ok(func.display().to_string())
}

// ---- legality ----

/// How four lanes of a dtype are held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VTy {
    F32,
    F64,
    I32,
    I64,
    Mask,
}

impl VTy {
    fn of(d: DType) -> Option<VTy> {
        Some(match d {
            DType::F32 => VTy::F32,
            DType::F64 => VTy::F64,
            DType::I32 => VTy::I32,
            DType::I64 => VTy::I64,
            DType::Bool => VTy::Mask,
            _ => return None,
        })
    }

    /// The Cranelift type of one part (two parts for f64 and i64).
    fn part(self) -> Type {
        match self {
            VTy::F32 => types::F32X4,
            VTy::F64 => types::F64X2,
            VTy::I32 | VTy::Mask => types::I32X4,
            VTy::I64 => types::I64X2,
        }
    }

    fn parts(self) -> usize {
        match self {
            VTy::F64 | VTy::I64 => 2,
            _ => 1,
        }
    }

    fn is_float(self) -> bool {
        matches!(self, VTy::F32 | VTy::F64)
    }
}

/// Four lanes: `parts()` vectors (the second equals the first for one-part types).
#[derive(Clone, Copy, Debug)]
struct VVal {
    ty: VTy,
    p: [Value; 2],
}

impl VVal {
    fn one(ty: VTy, v: Value) -> VVal {
        VVal { ty, p: [v, v] }
    }

    fn two(ty: VTy, lo: Value, hi: Value) -> VVal {
        VVal { ty, p: [lo, hi] }
    }
}

#[derive(Clone, Copy, Debug)]
struct Local {
    varying: bool,
}

/// What a loop body's names and buffers are, for classifying its expressions.
#[derive(Clone, Debug)]
struct Analysis<'k> {
    kernel: &'k Kernel,
    var: &'k str,
    /// Names bound to data-dependent integers (their indices are checked).
    data: HashSet<String>,
    /// Names bound in the body.
    locals: HashMap<&'k str, Local>,
    /// Every store of the body.
    stores: Vec<(BufferId, &'k Dim)>,
}

/// A reduction `acc = op(acc, term)`.
#[derive(Clone, Copy, Debug)]
struct Reduction<'k> {
    acc: &'k str,
    op: BinaryOp,
    dtype: DType,
    term: &'k Expr,
}

/// A loop the vector code generator accepts.
#[derive(Clone, Debug)]
pub(super) struct Plan<'k> {
    an: Analysis<'k>,
    /// The statements emitted as vector code (the reduction's assignment excluded).
    stmts: &'k [Stmt],
    red: Option<Reduction<'k>>,
}

/// The vector plan of loop `l` of `kernel`, or `None` when it stays scalar. `data` holds the
/// names bound to data-dependent integers around the loop.
pub(super) fn plan<'k>(
    kernel: &'k Kernel,
    l: &'k Loop,
    data: &HashSet<String>,
) -> Option<Plan<'k>> {
    if !enabled() || l.extent.as_const().is_some_and(|c| c < LANES) {
        return None;
    }
    let (stmts, red) = match l.annot.kind {
        LoopKind::Parallel => (&l.body[..], None),
        LoopKind::Reduction => {
            let (last, rest) = l.body.split_last()?;
            let Stmt::Assign { var, value } = last else {
                return None;
            };
            (rest, Some((var.as_str(), value)))
        }
        LoopKind::Serial => return None,
    };
    let mut an = Analysis {
        kernel,
        var: &l.var,
        data: data.clone(),
        locals: HashMap::new(),
        stores: Vec::new(),
    };
    for s in stmts {
        if let Stmt::Store { buffer, index, .. } = s {
            an.stores.push((*buffer, index));
        }
    }
    // Stores of one buffer all write the same element.
    for (b, i) in &an.stores {
        if an.stores.iter().any(|(b2, i2)| b2 == b && i2 != i) {
            return None;
        }
    }
    let mut refs: HashSet<String> = HashSet::new();
    for s in stmts {
        match s {
            Stmt::Let { var, dtype, value }
            | Stmt::Declare {
                var,
                dtype,
                init: value,
            } => {
                if value.dtype() != *dtype
                    || var == &l.var
                    || an.locals.contains_key(var.as_str())
                    || refs.contains(var)
                    || red.is_some_and(|(acc, _)| acc == var)
                {
                    return None;
                }
                value.refs(&mut refs);
                if !an.loads_ok(value) {
                    return None;
                }
                let varying = an.varying(value);
                if varying && (an.check(value, false)? != VTy::of(*dtype)?) {
                    return None;
                }
                if dtype.is_int() && value.may_read_memory() {
                    an.data.insert(var.clone());
                }
                an.locals.insert(var, Local { varying });
            }
            Stmt::Store {
                buffer,
                index,
                value,
            } => {
                value.refs(&mut refs);
                let p = kernel.param(*buffer)?;
                let ty = VTy::of(p.dtype)?;
                if ty == VTy::Mask
                    || value.dtype() != p.dtype
                    || an.stride(index)? != 1
                    || an.uses_data(index)
                    || !an.loads_ok(value)
                    || an.check(value, false)? != ty
                {
                    return None;
                }
            }
            _ => return None,
        }
    }
    let red = match red {
        None => None,
        Some((acc, value)) => {
            let Expr::Binary { op, dtype, a, b } = value else {
                return None;
            };
            let is_acc = |e: &Expr| matches!(e, Expr::Var { name, .. } if name == acc);
            let term = if is_acc(a) {
                b
            } else if is_acc(b) && (*op == BinaryOp::Add || dtype.is_int()) {
                // Addition commutes exactly; float min/max must see the accumulator first
                // (ties keep the first operand).
                a
            } else {
                return None;
            };
            let ok = match op {
                BinaryOp::Add => matches!(dtype, DType::F64 | DType::I64 | DType::I32),
                BinaryOp::Max | BinaryOp::Min => {
                    matches!(dtype, DType::F32 | DType::F64 | DType::I64 | DType::I32)
                }
                _ => false,
            };
            let mut term_refs = HashSet::new();
            term.refs(&mut term_refs);
            // Stores beside a sum (a softmax row storing its exps) are fine; beside a float
            // min/max they could be repeated by the scalar recomputation at a zero result.
            if !ok
                || (!an.stores.is_empty() && *op != BinaryOp::Add)
                || refs.contains(acc)
                || term_refs.contains(acc)
                || an.locals.contains_key(acc)
                || !an.loads_ok(term)
                || an.check(term, false)? != VTy::of(*dtype)?
            {
                return None;
            }
            Some(Reduction {
                acc,
                op: *op,
                dtype: *dtype,
                term,
            })
        }
    };
    Some(Plan { an, stmts, red })
}

fn has_load(e: &Expr) -> bool {
    match e {
        Expr::Load { .. } | Expr::LoadDequant { .. } => true,
        Expr::Const { .. } | Expr::Var { .. } | Expr::Index(_) => false,
        Expr::Unary { x, .. } | Expr::Cast { x, .. } => has_load(x),
        Expr::Binary { a, b, .. } => has_load(a) || has_load(b),
        Expr::Select { cond, a, b } => has_load(cond) || has_load(a) || has_load(b),
        Expr::Bind { value, body, .. } => has_load(value) || has_load(body),
    }
}

/// `cast.f32(cast.f64(y))` of an f32 `y`: exactly `y`.
fn widen_narrow(e: &Expr) -> Option<&Expr> {
    let Expr::Cast { to: DType::F32, x } = e else {
        return None;
    };
    let Expr::Cast {
        to: DType::F64,
        x: y,
    } = x.as_ref()
    else {
        return None;
    };
    (y.dtype() == DType::F32).then_some(y)
}

fn unary_ok(op: UnaryOp, t: VTy) -> bool {
    use UnaryOp::*;
    match t {
        VTy::F32 => matches!(
            op,
            Neg | Abs | Floor | Ceil | Round | Sqrt | Recip | Rsqrt | Exp | Tanh | Sign
        ),
        VTy::F64 => matches!(op, Neg | Abs | Floor | Ceil | Round | Sqrt | Recip | Sign),
        VTy::I32 | VTy::I64 => matches!(op, Neg | Abs | Not | Sign),
        VTy::Mask => op == Not,
    }
}

fn binary_ok(op: BinaryOp, t: VTy) -> bool {
    use BinaryOp::*;
    if op.is_comparison() {
        return true;
    }
    match t {
        VTy::F32 | VTy::F64 => matches!(op, Add | Sub | Mul | Div | Max | Min),
        VTy::I32 | VTy::I64 => matches!(op, Add | Sub | Mul | Max | Min | And | Or | Xor),
        VTy::Mask => matches!(op, And | Or | Xor),
    }
}

fn cast_ok(from: VTy, to: VTy) -> bool {
    use VTy::*;
    from == to
        || matches!(
            (from, to),
            (F32, F64)
                | (F64, F32)
                | (I32, F32)
                | (F32, I32)
                | (I32, I64)
                | (I64, I32)
                | (I32, F64)
                | (Mask, _)
                | (_, Mask)
        )
}

impl Analysis<'_> {
    fn local_varying(&self, name: &str) -> bool {
        name == self.var || self.locals.get(name).is_some_and(|l| l.varying)
    }

    fn dim_varying(&self, d: &Dim) -> bool {
        d.symbols().iter().any(|s| self.local_varying(s))
    }

    /// True when `e` depends on the loop variable.
    fn varying(&self, e: &Expr) -> bool {
        match e {
            Expr::Const { .. } => false,
            Expr::Index(d) | Expr::Load { index: d, .. } | Expr::LoadDequant { index: d, .. } => {
                self.dim_varying(d)
            }
            Expr::Var { name, .. } => self.local_varying(name),
            Expr::Unary { x, .. } | Expr::Cast { x, .. } => self.varying(x),
            Expr::Binary { a, b, .. } => self.varying(a) || self.varying(b),
            Expr::Select { cond, a, b } => self.varying(cond) || self.varying(a) || self.varying(b),
            Expr::Bind { value, body, .. } => self.varying(value) || self.varying(body),
        }
    }

    /// True when `e` is computed once before the loop by the scalar code: it does not depend
    /// on the loop variable, and either runs in every iteration or reads no memory.
    fn hoistable(&self, e: &Expr, guarded: bool) -> bool {
        !self.varying(e) && (!guarded || !has_load(e))
    }

    fn uses_data(&self, d: &Dim) -> bool {
        d.symbols().iter().any(|s| self.data.contains(s))
    }

    /// The index's step per iteration of the loop variable, when constant.
    fn stride(&self, d: &Dim) -> Option<i64> {
        if d.symbols()
            .iter()
            .any(|s| s != self.var && self.local_varying(s))
        {
            return None;
        }
        let mut m = BTreeMap::new();
        m.insert(self.var.to_string(), Dim::symbol(self.var) + Dim::from(1));
        (d.substitute(&m) - d.clone()).as_const()
    }

    /// Every load of a buffer the body stores to reads the element being stored.
    fn loads_ok(&self, e: &Expr) -> bool {
        match e {
            Expr::Load { buffer, index, .. } | Expr::LoadDequant { buffer, index, .. } => {
                self.stores.iter().all(|(b, i)| b != buffer || *i == index)
            }
            Expr::Const { .. } | Expr::Var { .. } | Expr::Index(_) => true,
            Expr::Unary { x, .. } | Expr::Cast { x, .. } => self.loads_ok(x),
            Expr::Binary { a, b, .. } => self.loads_ok(a) && self.loads_ok(b),
            Expr::Select { cond, a, b } => {
                self.loads_ok(cond) && self.loads_ok(a) && self.loads_ok(b)
            }
            Expr::Bind { value, body, .. } => self.loads_ok(value) && self.loads_ok(body),
        }
    }

    /// The lanes' type of `e` when the vector code supports it (`guarded`: inside a select
    /// arm, evaluated only for the lanes that choose it).
    fn check(&self, e: &Expr, guarded: bool) -> Option<VTy> {
        if self.hoistable(e, guarded) {
            return VTy::of(e.dtype());
        }
        match e {
            Expr::Const { dtype, .. } => VTy::of(*dtype),
            Expr::Index(d) => self.stride(d).map(|_| VTy::I64),
            Expr::Var { name, dtype } => (name != self.var).then_some(VTy::of(*dtype)?),
            Expr::Load {
                buffer,
                dtype,
                index,
            } => {
                let p = self.kernel.param(*buffer)?;
                let ty = VTy::of(*dtype)?;
                if p.dtype != *dtype {
                    return None;
                }
                let data = self.uses_data(index);
                match self.stride(index)? {
                    // Bools (one byte each) only as plain contiguous loads (a causal mask).
                    1 if ty == VTy::Mask => (!guarded && !data).then_some(ty),
                    1 if !(guarded && data) => Some(ty),
                    0 if !data && ty != VTy::Mask => Some(ty),
                    _ => None,
                }
            }
            Expr::Unary { op, dtype, x } => {
                let t = self.check(x, guarded)?;
                (t == VTy::of(*dtype)? && unary_ok(*op, t)).then_some(t)
            }
            Expr::Binary { op, dtype, a, b } => {
                let t = VTy::of(*dtype)?;
                if self.check(a, guarded)? != t || self.check(b, guarded)? != t {
                    return None;
                }
                if !binary_ok(*op, t) {
                    return None;
                }
                Some(if op.is_comparison() { VTy::Mask } else { t })
            }
            Expr::Select { cond, a, b } => {
                if self.check(cond, guarded)? != VTy::Mask {
                    return None;
                }
                let t = self.check(a, true)?;
                (self.check(b, true)? == t).then_some(t)
            }
            Expr::Cast { to, x } => {
                if let Some(y) = widen_narrow(e) {
                    return self.check(y, guarded);
                }
                let from = self.check(x, guarded)?;
                let to = VTy::of(*to)?;
                cast_ok(from, to).then_some(to)
            }
            Expr::Bind { var, value, body } => {
                // A loop-invariant data-dependent index (an embedding row): computed before
                // the loop; the body's loads at it are checked.
                if var == self.var
                    || self.locals.contains_key(var.as_str())
                    || value.dtype() != DType::I64
                    || !self.hoistable(value, guarded)
                {
                    return None;
                }
                let mut inner = self.clone();
                inner.data.insert(var.clone());
                inner.check(body, guarded)
            }
            Expr::LoadDequant { .. } => None,
        }
    }
}

// ---- code generation ----

/// State of one vector loop's code generation.
struct VecState<'k> {
    an: Analysis<'k>,
    /// Loop-invariant sub-expressions, computed before the loop, by node address.
    hoisted: HashMap<*const Expr, VVal>,
    /// The body's varying names.
    locals: HashMap<String, VVal>,
    /// Buffer lengths (elements), for checked loads.
    lens: HashMap<BufferId, Value>,
    /// The values of loop-invariant `bind`s, by node address.
    binds: HashMap<*const Expr, Value>,
    /// Bind names this loop added to the emitter's data-dependent names.
    bind_names: Vec<String>,
    /// The first iteration of the current vector (the scalar loop variable's value).
    i: Value,
}

fn little() -> MemFlagsData {
    MemFlagsData::new().with_endianness(Endianness::Little)
}

/// Vector memory accesses: in bounds (never trap), possibly unaligned.
fn vflags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

impl<M: Module> Emitter<'_, '_, M> {
    /// Emits loop `l` over `start..end` as vector code when [`plan`] accepts it (returns
    /// `true`); otherwise emits nothing and returns `false`.
    pub(super) fn try_vector_loop(
        &mut self,
        l: &Loop,
        start: Value,
        end: Value,
    ) -> Result<bool, CodegenError> {
        let kernel = self.kernel;
        let Some(plan) = plan(kernel, l, &self.data_syms) else {
            return Ok(false);
        };
        self.vector_loop(plan, l, start, end)?;
        Ok(true)
    }

    fn vector_loop(
        &mut self,
        plan: Plan<'_>,
        l: &Loop,
        start: Value,
        end: Value,
    ) -> Result<(), CodegenError> {
        let Plan { an, stmts, red } = plan;
        let step = LANES * GROUPS;
        let count = self.b.ins().isub(end, start);
        let enough = self
            .b
            .ins()
            .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, count, LANES);
        let rem_start = self.b.declare_var(types::I64);
        self.b.def_var(rem_start, start);
        let (pre, body, tail_check, tail, exit, rem) = (
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
        );
        self.b.ins().brif(enough, pre, &[], rem, &[]);

        // Before the loop: loop-invariant values, accumulators.
        self.b.switch_to_block(pre);
        let whole = self.b.ins().band_imm_s(count, !(step - 1));
        let vend = self.b.ins().iadd(start, whole);
        let mut st = VecState {
            an,
            hoisted: HashMap::new(),
            locals: HashMap::new(),
            lens: HashMap::new(),
            binds: HashMap::new(),
            bind_names: Vec::new(),
            i: start,
        };
        for s in stmts {
            match s {
                Stmt::Let { value, .. } | Stmt::Declare { init: value, .. } => {
                    if st.an.varying(value) {
                        self.vhoist(&mut st, value, false)?;
                    } else {
                        self.stmt(s)?;
                    }
                }
                Stmt::Store { value, .. } => self.vhoist(&mut st, value, false)?,
                _ => return Err(self.unsupported("vector loop statement")),
            }
        }
        let mut accs: Vec<(Variable, VTy)> = Vec::new();
        let mut acc0 = None;
        if let Some(r) = &red {
            self.vhoist(&mut st, r.term, false)?;
            let Some(&(acc_var, acc_dtype)) = self.vars.get(r.acc) else {
                return Err(self.unsupported(format!("assignment to undeclared `{}`", r.acc)));
            };
            if acc_dtype != r.dtype {
                return Err(
                    self.unsupported(format!("a {} value where {acc_dtype} is expected", r.dtype))
                );
            }
            let a0 = self.b.use_var(acc_var);
            acc0 = Some((acc_var, a0));
            let ty = VTy::of(r.dtype).expect("checked by plan");
            // Sums start at the additive identity (-0.0 keeps a sum of -0.0 terms -0.0),
            // min/max at the initial accumulator (idempotent).
            let init = match (r.op, ty.is_float()) {
                (BinaryOp::Add, true) => {
                    let z = self.b.ins().f64const(-0.0);
                    self.splat(DType::F64, z)?
                }
                (BinaryOp::Add, false) => {
                    let z = self.b.ins().iconst(types::I64, 0);
                    self.splat(r.dtype, z)?
                }
                _ => self.splat(r.dtype, a0)?,
            };
            for _ in 0..GROUPS {
                for k in 0..ty.parts() {
                    let v = self.b.declare_var(ty.part());
                    self.b.def_var(v, init.p[k]);
                    accs.push((v, ty));
                }
            }
        }
        // The main loop, GROUPS vectors per trip, runs when there are at least that many
        // iterations. It is rotated (the test at the bottom): Cranelift's loop-invariant code
        // motion visits blocks in dominator-tree order and loses track of a loop whose exit
        // block it visits before the body, as it does when the test is in the header.
        let iv = self.b.declare_var(types::I64);
        self.b.def_var(iv, start);
        let trip = self
            .b
            .ins()
            .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, count, step);
        self.b.ins().brif(trip, body, &[], tail_check, &[]);

        self.b.switch_to_block(body);
        let i = self.b.use_var(iv);
        for g in 0..GROUPS {
            let ig = if g == 0 {
                i
            } else {
                self.b.ins().iadd_imm_s(i, g * LANES)
            };
            self.vgroup(&mut st, l, stmts, red.as_ref(), &accs, g as usize, ig)?;
        }
        let next = self.b.ins().iadd_imm_s(i, step);
        self.b.def_var(iv, next);
        let more = self.b.ins().icmp(IntCC::SignedLessThan, next, vend);
        self.b.ins().brif(more, body, &[], tail_check, &[]);

        // One more vector when 4 to 7 iterations are left.
        self.b.switch_to_block(tail_check);
        let i = self.b.use_var(iv);
        let left = self.b.ins().isub(end, i);
        let four = self
            .b
            .ins()
            .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, left, LANES);
        self.b.ins().brif(four, tail, &[], exit, &[]);
        self.b.switch_to_block(tail);
        // Lengths computed in the main loop's body do not dominate this block.
        st.lens.clear();
        self.vgroup(&mut st, l, stmts, red.as_ref(), &accs, 0, i)?;
        let next = self.b.ins().iadd_imm_s(i, LANES);
        self.b.def_var(iv, next);
        self.b.ins().jump(exit, &[]);

        // After the vectors: combine the lanes, continue with the scalar remainder.
        self.b.switch_to_block(exit);
        let vend = self.b.use_var(iv);
        let mut rs = vend;
        if let (Some(r), Some((acc_var, a0))) = (&red, acc0) {
            let ty = VTy::of(r.dtype).expect("checked by plan");
            let parts: Vec<Value> = accs.iter().map(|&(v, _)| self.b.use_var(v)).collect();
            let total = self.combine(r, ty, &parts)?;
            let (acc, from) = if r.op == BinaryOp::Add {
                (self.binary(BinaryOp::Add, r.dtype, a0, total)?, vend)
            } else if ty.is_float() {
                // A float min/max of zero: the sign of the first zero in sequence order
                // decides; recompute the whole reduction with the scalar loop.
                let zero = self.float_const(super::cl_type(r.dtype), 0.0);
                let is0 = self.b.ins().fcmp(FloatCC::Equal, total, zero);
                (
                    self.b.ins().select(is0, a0, total),
                    self.b.ins().select(is0, start, vend),
                )
            } else {
                (total, vend)
            };
            self.b.def_var(acc_var, acc);
            rs = from;
        }
        self.b.def_var(rem_start, rs);
        self.b.ins().jump(rem, &[]);

        self.b.switch_to_block(rem);
        for name in &st.bind_names {
            self.data_syms.remove(name);
        }
        let rs = self.b.use_var(rem_start);
        let var = l.var.clone();
        self.counted_loop(rs, end, |e, i| {
            e.define(&var, DType::I64, i);
            e.stmts(&l.body)
        })
    }

    /// One vector of the body: iterations `i..i + 4`; a reduction updates the accumulators
    /// of group `g`.
    #[allow(clippy::too_many_arguments)]
    fn vgroup(
        &mut self,
        st: &mut VecState<'_>,
        l: &Loop,
        stmts: &[Stmt],
        red: Option<&Reduction<'_>>,
        accs: &[(Variable, VTy)],
        g: usize,
        i: Value,
    ) -> Result<(), CodegenError> {
        self.define(&l.var, DType::I64, i);
        st.i = i;
        for s in stmts {
            self.vstmt(st, s)?;
        }
        if let Some(r) = red {
            let x = self.vexpr(st, r.term, false)?;
            let parts = x.ty.parts();
            for k in 0..parts {
                let (var, ty) = accs[g * parts + k];
                let a = self.b.use_var(var);
                let a = VVal::one(ty, a);
                let xk = VVal::one(ty, x.p[k]);
                let n = self.vbinary_part(r.op, a, xk)?;
                self.b.def_var(var, n);
            }
        }
        Ok(())
    }

    /// The lanes of the accumulator parts folded into one scalar of `r.dtype` (the
    /// sequential `op` over lanes; for sums a tree).
    fn combine(
        &mut self,
        r: &Reduction<'_>,
        ty: VTy,
        parts: &[Value],
    ) -> Result<Value, CodegenError> {
        if r.op == BinaryOp::Add && ty.is_float() {
            let mut t = parts[0];
            for &p in &parts[1..] {
                t = self.b.ins().fadd(t, p);
            }
            let a = self.b.ins().extractlane(t, 0);
            let b = self.b.ins().extractlane(t, 1);
            return Ok(self.b.ins().fadd(a, b));
        }
        let mut acc: Option<Value> = None;
        for &p in parts {
            let n = ty.part().lane_count();
            for k in 0..n {
                let mut x = self.b.ins().extractlane(p, k as u8);
                if ty == VTy::I32 {
                    x = self.b.ins().sextend(types::I64, x);
                }
                acc = Some(match acc {
                    None => x,
                    Some(a) => self.binary(r.op, r.dtype, a, x)?,
                });
            }
        }
        Ok(acc.expect("at least one lane"))
    }

    /// Four copies of the scalar `s` (held as the scalar code holds `d`).
    fn splat(&mut self, d: DType, s: Value) -> Result<VVal, CodegenError> {
        let ty = VTy::of(d).ok_or_else(|| self.unsupported(format!("{d} lanes")))?;
        let v = match ty {
            VTy::F32 | VTy::F64 | VTy::I64 => self.b.ins().splat(ty.part(), s),
            VTy::I32 => {
                let n = self.b.ins().ireduce(types::I32, s);
                self.b.ins().splat(types::I32X4, n)
            }
            VTy::Mask => {
                let w = self.b.ins().uextend(types::I32, s);
                let m = self.b.ins().ineg(w);
                self.b.ins().splat(types::I32X4, m)
            }
        };
        Ok(VVal::one(ty, v))
    }

    fn const_lanes(&mut self, ty: Type, bytes: Vec<u8>) -> Value {
        let c = self.b.func.dfg.constants.insert(ConstantData::from(bytes));
        self.b.ins().vconst(ty, c)
    }

    fn splat_f32(&mut self, v: f32) -> Value {
        let c = self.b.ins().f32const(v);
        self.b.ins().splat(types::F32X4, c)
    }

    fn splat_f64(&mut self, v: f64) -> Value {
        let c = self.b.ins().f64const(v);
        self.b.ins().splat(types::F64X2, c)
    }

    fn splat_int(&mut self, ty: Type, v: i64) -> Value {
        let c = self.b.ins().iconst(ty.lane_type(), v);
        self.b.ins().splat(ty, c)
    }

    /// Lanes of two 4 x 32-bit vectors: `lanes[k]` < 4 picks lane k of `a`, else of `b`.
    fn shuffle32(&mut self, a: Value, b: Value, lanes: [u8; 4]) -> Value {
        let ty = self.b.func.dfg.value_type(a);
        let bytes: Vec<u8> = lanes
            .iter()
            .flat_map(|&l| (0..4).map(move |j| 4 * l + j))
            .collect();
        let imm = self.b.func.dfg.immediates.push(ConstantData::from(bytes));
        let a8 = self.b.ins().bitcast(types::I8X16, little(), a);
        let b8 = self.b.ins().bitcast(types::I8X16, little(), b);
        let s = self.b.ins().shuffle(a8, b8, imm);
        self.b.ins().bitcast(ty, little(), s)
    }

    /// f32x4 to two f64x2 (lanes 0-1, 2-3), exactly.
    fn widen_f32(&mut self, x: Value) -> (Value, Value) {
        let lo = self.b.ins().fvpromote_low(x);
        let h = self.shuffle32(x, x, [2, 3, 2, 3]);
        let hi = self.b.ins().fvpromote_low(h);
        (lo, hi)
    }

    /// Two f64x2 rounded to one f32x4.
    fn narrow_f64(&mut self, lo: Value, hi: Value) -> Value {
        let a = self.b.ins().fvdemote(lo);
        let b = self.b.ins().fvdemote(hi);
        self.shuffle32(a, b, [0, 1, 4, 5])
    }

    /// The low 32 bits of each lane of two i64x2 (integers or masks), as one i32x4.
    fn narrow_i64(&mut self, lo: Value, hi: Value) -> Value {
        let a = self.b.ins().bitcast(types::I32X4, little(), lo);
        let b = self.b.ins().bitcast(types::I32X4, little(), hi);
        self.shuffle32(a, b, [0, 2, 4, 6])
    }

    /// A mask as two i64x2 masks (lanes 0-1, 2-3).
    fn widen_mask(&mut self, m: Value) -> (Value, Value) {
        (self.b.ins().swiden_low(m), self.b.ins().swiden_high(m))
    }

    /// `m ? a : b` per lane of one part (`m` an integer mask of the part's lane width).
    fn bitsel(&mut self, m: Value, a: Value, b: Value) -> Value {
        let ty = self.b.func.dfg.value_type(a);
        let m = if self.b.func.dfg.value_type(m) == ty {
            m
        } else {
            self.b.ins().bitcast(ty, MemFlagsData::new(), m)
        };
        self.b.ins().bitselect(m, a, b)
    }

    fn buf_len(&mut self, st: &mut VecState<'_>, buffer: BufferId) -> Result<Value, CodegenError> {
        if let Some(&v) = st.lens.get(&buffer) {
            return Ok(v);
        }
        let (_, _, len) = self.buffer(buffer)?;
        let v = self.dim(&len)?;
        st.lens.insert(buffer, v);
        Ok(v)
    }

    /// `base + idx * size` of a plain-dtype buffer.
    fn elem_addr(&mut self, buffer: BufferId, idx: Value) -> Result<Value, CodegenError> {
        let (base, dtype, _) = self.buffer(buffer)?;
        let size = dtype.size_bytes().unwrap_or(1) as i64;
        let off = self.b.ins().imul_imm_s(idx, size);
        let off = if self.ptr == types::I64 {
            off
        } else {
            self.b.ins().ireduce(self.ptr, off)
        };
        Ok(self.b.ins().iadd(base, off))
    }

    fn vload_at(&mut self, ty: VTy, addr: Value) -> VVal {
        if ty == VTy::Mask {
            // Four bool bytes (0 or 1) -> four i32 lanes of all ones or zero.
            let word = self.b.ins().load(types::I32, vflags(), addr, 0);
            let v = self.b.ins().scalar_to_vector(types::I32X4, word);
            let bytes = self.b.ins().bitcast(
                types::I8X16,
                MemFlagsData::new().with_endianness(Endianness::Little),
                v,
            );
            let halves = self.b.ins().uwiden_low(bytes);
            let words = self.b.ins().uwiden_low(halves);
            let mask = self.b.ins().ineg(words);
            return VVal::one(ty, mask);
        }
        let t = ty.part();
        let lo = self.b.ins().load(t, vflags(), addr, 0);
        if ty.parts() == 2 {
            let hi = self.b.ins().load(t, vflags(), addr, 16);
            VVal::two(ty, lo, hi)
        } else {
            VVal::one(ty, lo)
        }
    }

    fn vstore_at(&mut self, v: VVal, addr: Value) {
        self.b.ins().store(vflags(), v.p[0], addr, 0);
        if v.ty.parts() == 2 {
            self.b.ins().store(vflags(), v.p[1], addr, 16);
        }
    }

    /// Walks `e` and computes its maximal loop-invariant sub-expressions with the scalar
    /// code, broadcast (before the loop).
    fn vhoist(
        &mut self,
        st: &mut VecState<'_>,
        e: &Expr,
        guarded: bool,
    ) -> Result<(), CodegenError> {
        if st.an.hoistable(e, guarded) {
            let key = e as *const Expr;
            if let std::collections::hash_map::Entry::Vacant(slot) = st.hoisted.entry(key) {
                let s = self.expr(e)?;
                let v = self.splat(e.dtype(), s)?;
                slot.insert(v);
            }
            return Ok(());
        }
        if let Some(y) = widen_narrow(e) {
            return self.vhoist(st, y, guarded);
        }
        match e {
            Expr::Unary { x, .. } | Expr::Cast { x, .. } => self.vhoist(st, x, guarded),
            Expr::Binary { a, b, .. } => {
                self.vhoist(st, a, guarded)?;
                self.vhoist(st, b, guarded)
            }
            Expr::Select { cond, a, b } => {
                self.vhoist(st, cond, guarded)?;
                self.vhoist(st, a, true)?;
                self.vhoist(st, b, true)
            }
            Expr::Bind { var, value, body } => {
                let v = self.expr(value)?;
                st.binds.insert(e as *const Expr, v);
                self.define(var, DType::I64, v);
                if self.data_syms.insert(var.clone()) {
                    st.bind_names.push(var.clone());
                }
                st.an.data.insert(var.clone());
                self.vhoist(st, body, guarded)
            }
            _ => Ok(()),
        }
    }

    fn vstmt(&mut self, st: &mut VecState<'_>, s: &Stmt) -> Result<(), CodegenError> {
        match s {
            Stmt::Let { var, value, .. }
            | Stmt::Declare {
                var, init: value, ..
            } => {
                if st.an.varying(value) {
                    let v = self.vexpr(st, value, false)?;
                    st.locals.insert(var.clone(), v);
                }
            }
            Stmt::Store {
                buffer,
                index,
                value,
            } => {
                let v = self.vexpr(st, value, false)?;
                let idx = self.dim(index)?;
                let addr = self.elem_addr(*buffer, idx)?;
                self.vstore_at(v, addr);
            }
            _ => return Err(self.unsupported("vector loop statement")),
        }
        Ok(())
    }

    fn vexpr(
        &mut self,
        st: &mut VecState<'_>,
        e: &Expr,
        guarded: bool,
    ) -> Result<VVal, CodegenError> {
        if let Some(v) = st.hoisted.get(&(e as *const Expr)) {
            return Ok(*v);
        }
        if let Some(y) = widen_narrow(e) {
            return self.vexpr(st, y, guarded);
        }
        match e {
            Expr::Index(d) => {
                let s = st
                    .an
                    .stride(d)
                    .ok_or_else(|| self.unsupported("a non-affine index in a vector loop"))?;
                let base = self.dim(d)?;
                let base = self.b.ins().splat(types::I64X2, base);
                let ramp = |k0: i64| -> Vec<u8> {
                    [k0 * s, (k0 + 1) * s]
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect()
                };
                let (c0, c1) = (ramp(0), ramp(2));
                let c0 = self.const_lanes(types::I64X2, c0);
                let c1 = self.const_lanes(types::I64X2, c1);
                let lo = self.b.ins().iadd(base, c0);
                let hi = self.b.ins().iadd(base, c1);
                Ok(VVal::two(VTy::I64, lo, hi))
            }
            Expr::Var { name, .. } => st
                .locals
                .get(name)
                .copied()
                .ok_or_else(|| self.unsupported(format!("unknown vector variable `{name}`"))),
            Expr::Load {
                buffer,
                dtype,
                index,
            } => self.vload(st, *buffer, *dtype, index, guarded),
            Expr::Unary { op, dtype, x } => {
                let v = self.vexpr(st, x, guarded)?;
                self.vunary(*op, *dtype, v)
            }
            Expr::Binary { op, a, b, .. } => {
                let x = self.vexpr(st, a, guarded)?;
                let y = self.vexpr(st, b, guarded)?;
                self.vbinary(*op, x, y)
            }
            Expr::Select { cond, a, b } => {
                let c = self.vexpr(st, cond, guarded)?;
                let x = self.vexpr(st, a, true)?;
                let y = self.vexpr(st, b, true)?;
                Ok(self.vselect(c.p[0], x, y))
            }
            Expr::Cast { to, x } => {
                let v = self.vexpr(st, x, guarded)?;
                let to = VTy::of(*to).ok_or_else(|| self.unsupported(format!("cast to {to}")))?;
                self.vcast(v, to)
            }
            Expr::Bind { var, body, .. } => {
                let Some(&v) = st.binds.get(&(e as *const Expr)) else {
                    return Err(self.unsupported(format!("bind of `{var}` in a vector loop")));
                };
                self.define(var, DType::I64, v);
                self.vexpr(st, body, guarded)
            }
            _ => Err(self.unsupported("expression in a vector loop")),
        }
    }

    /// `c ? x : y` per lane (`c` a mask).
    fn vselect(&mut self, c: Value, x: VVal, y: VVal) -> VVal {
        if x.ty.parts() == 2 {
            let (mlo, mhi) = self.widen_mask(c);
            let lo = self.bitsel(mlo, x.p[0], y.p[0]);
            let hi = self.bitsel(mhi, x.p[1], y.p[1]);
            VVal::two(x.ty, lo, hi)
        } else {
            let r = self.bitsel(c, x.p[0], y.p[0]);
            VVal::one(x.ty, r)
        }
    }

    fn vload(
        &mut self,
        st: &mut VecState<'_>,
        buffer: BufferId,
        dtype: DType,
        index: &Dim,
        guarded: bool,
    ) -> Result<VVal, CodegenError> {
        let ty = VTy::of(dtype).ok_or_else(|| self.unsupported(format!("{dtype} lanes")))?;
        let stride = st.an.stride(index);
        let data = st.an.uses_data(index);
        // A data-dependent index records whether its arithmetic overflowed (an id such as
        // i64::MIN times the row stride can wrap back into the buffer).
        if data {
            self.overflow = Some(self.b.ins().iconst(types::I8, 0));
        }
        let idx = self.dim(index)?;
        let wrapped = self.overflow.take();
        if stride == Some(0) && data {
            // A loop-invariant data-dependent load: the scalar code's clamp and status flag.
            let addr = self.address(buffer, index)?;
            let x = self.load(dtype, addr)?;
            return self.splat(dtype, x);
        }
        if stride == Some(0) {
            // A guarded loop-invariant load: only when in range.
            let len = self.buf_len(st, buffer)?;
            let x = self.checked_scalar_load(buffer, dtype, idx, len)?;
            return self.splat(dtype, x);
        }
        if !guarded && !data {
            let addr = self.elem_addr(buffer, idx)?;
            return Ok(self.vload_at(ty, addr));
        }
        // Checked: a vector load when the four elements are in the buffer, else lane by lane.
        let len = self.buf_len(st, buffer)?;
        let last = self.b.ins().iadd_imm_s(len, -LANES);
        let ge0 = self
            .b
            .ins()
            .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, idx, 0);
        let fits = self.b.ins().icmp(IntCC::SignedLessThanOrEqual, idx, last);
        let mut ok = self.b.ins().band(ge0, fits);
        if let Some(wrapped) = wrapped {
            // Overflowed: the lane-by-lane path clamps and flags it.
            let fine = self.b.ins().bxor_imm_u(wrapped, 1);
            ok = self.b.ins().band(ok, fine);
        }
        let (fast, slow, merge) = (
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
        );
        let params: Vec<Value> = (0..ty.parts())
            .map(|_| self.b.append_block_param(merge, ty.part()))
            .collect();
        self.b.ins().brif(ok, fast, &[], slow, &[]);

        self.b.switch_to_block(fast);
        let addr = self.elem_addr(buffer, idx)?;
        let v = self.vload_at(ty, addr);
        let args: Vec<_> = v.p[..ty.parts()].iter().map(|&x| x.into()).collect();
        self.b.ins().jump(merge, &args);

        self.b.switch_to_block(slow);
        let mut parts: Vec<Value> = (0..ty.parts())
            .map(|_| match ty {
                VTy::F32 => self.splat_f32(0.0),
                VTy::F64 => self.splat_f64(0.0),
                _ => self.splat_int(ty.part(), 0),
            })
            .collect();
        let per_part = ty.part().lane_count() as i64;
        for k in 0..LANES {
            let x = if data {
                // As the scalar code: clamped into the buffer, status set when outside.
                let ik = self.b.ins().iadd_imm_s(st.i, k);
                self.define(st.an.var, DType::I64, ik);
                let addr = self.address(buffer, index)?;
                self.load(dtype, addr)?
            } else {
                let ik = self.b.ins().iadd_imm_s(idx, k);
                self.checked_scalar_load(buffer, dtype, ik, len)?
            };
            let x = if ty == VTy::I32 {
                self.b.ins().ireduce(types::I32, x)
            } else {
                x
            };
            let p = (k / per_part) as usize;
            parts[p] = self.b.ins().insertlane(parts[p], x, (k % per_part) as u8);
        }
        if data {
            self.define(st.an.var, DType::I64, st.i);
        }
        let args: Vec<_> = parts.iter().map(|&x| x.into()).collect();
        self.b.ins().jump(merge, &args);

        self.b.switch_to_block(merge);
        Ok(if ty.parts() == 2 {
            VVal::two(ty, params[0], params[1])
        } else {
            VVal::one(ty, params[0])
        })
    }

    /// `buffer[idx]` when `0 <= idx < len`, else zero (a scalar held as the scalar code
    /// holds `dtype`).
    fn checked_scalar_load(
        &mut self,
        buffer: BufferId,
        dtype: DType,
        idx: Value,
        len: Value,
    ) -> Result<Value, CodegenError> {
        let ge0 = self
            .b
            .ins()
            .icmp_imm_s(IntCC::SignedGreaterThanOrEqual, idx, 0);
        let lt = self.b.ins().icmp(IntCC::SignedLessThan, idx, len);
        let inb = self.b.ins().band(ge0, lt);
        let (ld, skip, merge) = (
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
        );
        let r = self.b.append_block_param(merge, super::cl_type(dtype));
        self.b.ins().brif(inb, ld, &[], skip, &[]);
        self.b.switch_to_block(ld);
        let addr = self.elem_addr(buffer, idx)?;
        let x = self.load(dtype, addr)?;
        self.b.ins().jump(merge, &[x.into()]);
        self.b.switch_to_block(skip);
        let z = match dtype {
            DType::F32 => self.b.ins().f32const(0.0),
            DType::F64 => self.b.ins().f64const(0.0),
            _ => self.b.ins().iconst(types::I64, 0),
        };
        self.b.ins().jump(merge, &[z.into()]);
        self.b.switch_to_block(merge);
        Ok(r)
    }

    /// Runs `f` on each part of `v`.
    fn per_part(&mut self, v: VVal, mut f: impl FnMut(&mut Self, Value) -> Value) -> VVal {
        if v.ty.parts() == 2 {
            let lo = f(self, v.p[0]);
            let hi = f(self, v.p[1]);
            VVal::two(v.ty, lo, hi)
        } else {
            let r = f(self, v.p[0]);
            VVal::one(v.ty, r)
        }
    }

    fn vunary(&mut self, op: UnaryOp, d: DType, v: VVal) -> Result<VVal, CodegenError> {
        let ty = v.ty;
        if !unary_ok(op, ty) || VTy::of(d) != Some(ty) {
            return Err(self.unsupported(format!("vector {} on {d}", op.name())));
        }
        if ty == VTy::F32 && op == UnaryOp::Exp {
            return Ok(VVal::one(ty, self.exp_f32x4(v.p[0])));
        }
        if ty == VTy::F32 && matches!(op, UnaryOp::Rsqrt | UnaryOp::Tanh) {
            // In f64 on two halves, rounded once (the scalar code's operations).
            let (lo, hi) = self.widen_f32(v.p[0]);
            let f = |e: &mut Self, x: Value| match op {
                UnaryOp::Rsqrt => {
                    let s = e.b.ins().sqrt(x);
                    let one = e.splat_f64(1.0);
                    e.b.ins().fdiv(one, s)
                }
                _ => math::tanh_f64x2_for_f32(&mut e.b, x),
            };
            let lo = f(self, lo);
            let hi = f(self, hi);
            let r = self.narrow_f64(lo, hi);
            return Ok(VVal::one(ty, r));
        }
        Ok(self.per_part(v, |e, x| {
            let t = e.b.func.dfg.value_type(x);
            match op {
                UnaryOp::Neg if ty.is_float() => e.b.ins().fneg(x),
                UnaryOp::Abs if ty.is_float() => e.b.ins().fabs(x),
                UnaryOp::Floor => e.b.ins().floor(x),
                UnaryOp::Ceil => e.b.ins().ceil(x),
                UnaryOp::Round => e.b.ins().nearest(x),
                UnaryOp::Sqrt => e.b.ins().sqrt(x),
                UnaryOp::Recip => {
                    let one = e.float_splat(t, 1.0);
                    e.b.ins().fdiv(one, x)
                }
                UnaryOp::Sign if ty.is_float() => {
                    let (one, m1, zero) = (
                        e.float_splat(t, 1.0),
                        e.float_splat(t, -1.0),
                        e.float_splat(t, 0.0),
                    );
                    let nan = e.b.ins().fcmp(FloatCC::Unordered, x, x);
                    let r = e.bitsel(nan, x, zero);
                    let lt = e.b.ins().fcmp(FloatCC::LessThan, x, zero);
                    let r = e.bitsel(lt, m1, r);
                    let gt = e.b.ins().fcmp(FloatCC::GreaterThan, x, zero);
                    e.bitsel(gt, one, r)
                }
                UnaryOp::Neg => e.b.ins().ineg(x),
                UnaryOp::Abs => e.b.ins().iabs(x),
                UnaryOp::Not => e.b.ins().bnot(x),
                _ => {
                    // Sign of an integer.
                    let m1 = e.splat_int(t, -1);
                    let one = e.splat_int(t, 1);
                    let s = e.b.ins().smax(x, m1);
                    e.b.ins().smin(s, one)
                }
            }
        }))
    }

    /// `exp` of four f32 lanes: [`math::exp_f32`], the scalar code's algorithm lane by lane.
    /// When every lane is below the algorithm's lower clamp (-110, where every f32-held
    /// format rounds `exp` to +0: masked attention scores are -inf), the polynomial is
    /// skipped and the result is +0 in every lane, the value it would have computed.
    fn exp_f32x4(&mut self, x: Value) -> Value {
        let floor = self.splat_f32(kiln_ir::numerics::EXP_F32_LOW);
        let under = self.b.ins().fcmp(FloatCC::LessThan, x, floor);
        let all_under = self.b.ins().vall_true(under);
        let (full, join) = (self.b.create_block(), self.b.create_block());
        let r = self.b.append_block_param(join, types::F32X4);
        let zero = self.splat_f32(0.0);
        self.b
            .ins()
            .brif(all_under, join, &[zero.into()], full, &[]);
        self.b.switch_to_block(full);
        let e = math::exp_f32(&mut self.b, x);
        self.b.ins().jump(join, &[e.into()]);
        self.b.switch_to_block(join);
        r
    }

    fn float_splat(&mut self, t: Type, v: f64) -> Value {
        if t == types::F64X2 {
            self.splat_f64(v)
        } else {
            self.splat_f32(v as f32)
        }
    }

    fn vbinary(&mut self, op: BinaryOp, x: VVal, y: VVal) -> Result<VVal, CodegenError> {
        if x.ty != y.ty || !binary_ok(op, x.ty) {
            return Err(self.unsupported(format!("vector {}", op.name())));
        }
        if op.is_comparison() {
            return Ok(self.vcompare(op, x, y));
        }
        if x.ty.parts() == 2 {
            let lo = self.vbinary_part(op, VVal::one(x.ty, x.p[0]), VVal::one(x.ty, y.p[0]))?;
            let hi = self.vbinary_part(op, VVal::one(x.ty, x.p[1]), VVal::one(x.ty, y.p[1]))?;
            Ok(VVal::two(x.ty, lo, hi))
        } else {
            let r = self.vbinary_part(op, x, y)?;
            Ok(VVal::one(x.ty, r))
        }
    }

    /// A non-comparison binary op on one part of each operand.
    fn vbinary_part(&mut self, op: BinaryOp, x: VVal, y: VVal) -> Result<Value, CodegenError> {
        let (a, b) = (x.p[0], y.p[0]);
        let ins = self.b.ins();
        Ok(match (op, x.ty.is_float()) {
            (BinaryOp::Add, true) => ins.fadd(a, b),
            (BinaryOp::Sub, true) => ins.fsub(a, b),
            (BinaryOp::Mul, true) => ins.fmul(a, b),
            (BinaryOp::Div, true) => ins.fdiv(a, b),
            (BinaryOp::Max | BinaryOp::Min, true) => {
                // The interpreter's rule: NaN if either is NaN, else the first operand on
                // ties (as the scalar code).
                let cc = if op == BinaryOp::Max {
                    FloatCC::GreaterThanOrEqual
                } else {
                    FloatCC::LessThanOrEqual
                };
                let pick = self.b.ins().fcmp(cc, a, b);
                let r = self.bitsel(pick, a, b);
                let nan = self.b.ins().fcmp(FloatCC::Unordered, a, b);
                let sum = self.b.ins().fadd(a, b);
                self.bitsel(nan, sum, r)
            }
            (BinaryOp::Add, false) => ins.iadd(a, b),
            (BinaryOp::Sub, false) => ins.isub(a, b),
            (BinaryOp::Mul, false) => ins.imul(a, b),
            (BinaryOp::Max, false) => ins.smax(a, b),
            (BinaryOp::Min, false) => ins.smin(a, b),
            (BinaryOp::And, false) => ins.band(a, b),
            (BinaryOp::Or, false) => ins.bor(a, b),
            (BinaryOp::Xor, false) => ins.bxor(a, b),
            _ => return Err(self.unsupported(format!("vector {}", op.name()))),
        })
    }

    /// A comparison: a mask.
    fn vcompare(&mut self, op: BinaryOp, x: VVal, y: VVal) -> VVal {
        let cmp = |e: &mut Self, a: Value, b: Value| match x.ty {
            VTy::F32 | VTy::F64 => {
                let cc = match op {
                    BinaryOp::Eq => FloatCC::Equal,
                    BinaryOp::Ne => FloatCC::NotEqual,
                    BinaryOp::Lt => FloatCC::LessThan,
                    BinaryOp::Le => FloatCC::LessThanOrEqual,
                    BinaryOp::Gt => FloatCC::GreaterThan,
                    _ => FloatCC::GreaterThanOrEqual,
                };
                e.b.ins().fcmp(cc, a, b)
            }
            VTy::I32 | VTy::I64 => {
                let cc = match op {
                    BinaryOp::Eq => IntCC::Equal,
                    BinaryOp::Ne => IntCC::NotEqual,
                    BinaryOp::Lt => IntCC::SignedLessThan,
                    BinaryOp::Le => IntCC::SignedLessThanOrEqual,
                    BinaryOp::Gt => IntCC::SignedGreaterThan,
                    _ => IntCC::SignedGreaterThanOrEqual,
                };
                e.b.ins().icmp(cc, a, b)
            }
            // Bools compare as unsigned 0/1.
            VTy::Mask => match op {
                BinaryOp::Eq => e.b.ins().icmp(IntCC::Equal, a, b),
                BinaryOp::Ne => e.b.ins().icmp(IntCC::NotEqual, a, b),
                BinaryOp::Lt => e.b.ins().band_not(b, a),
                BinaryOp::Le => e.b.ins().bor_not(b, a),
                BinaryOp::Gt => e.b.ins().band_not(a, b),
                _ => e.b.ins().bor_not(a, b),
            },
        };
        if x.ty.parts() == 2 {
            let lo = cmp(self, x.p[0], y.p[0]);
            let hi = cmp(self, x.p[1], y.p[1]);
            let m = self.narrow_i64(lo, hi);
            VVal::one(VTy::Mask, m)
        } else {
            let m = cmp(self, x.p[0], y.p[0]);
            VVal::one(VTy::Mask, m)
        }
    }

    fn vcast(&mut self, v: VVal, to: VTy) -> Result<VVal, CodegenError> {
        use VTy::*;
        let x = v.p[0];
        Ok(match (v.ty, to) {
            (a, b) if a == b => v,
            (F32, F64) => {
                let (lo, hi) = self.widen_f32(x);
                VVal::two(F64, lo, hi)
            }
            (F64, F32) => VVal::one(F32, self.narrow_f64(v.p[0], v.p[1])),
            (I32, F32) => VVal::one(F32, self.b.ins().fcvt_from_sint(types::F32X4, x)),
            (F32, I32) => VVal::one(I32, self.b.ins().fcvt_to_sint_sat(types::I32X4, x)),
            (I32, I64) => {
                let lo = self.b.ins().swiden_low(x);
                let hi = self.b.ins().swiden_high(x);
                VVal::two(I64, lo, hi)
            }
            (I64, I32) => VVal::one(I32, self.narrow_i64(v.p[0], v.p[1])),
            (I32, F64) => {
                let l = self.b.ins().swiden_low(x);
                let lo = self.b.ins().fcvt_from_sint(types::F64X2, l);
                let h = self.shuffle32(x, x, [2, 3, 2, 3]);
                let h = self.b.ins().swiden_low(h);
                let hi = self.b.ins().fcvt_from_sint(types::F64X2, h);
                VVal::two(F64, lo, hi)
            }
            (Mask, t) => {
                // 1 (1.0) where true, 0 (+0.0) where false.
                let (one_bits, lane) = match t {
                    F32 => (f32::to_bits(1.0) as i64, types::I32X4),
                    F64 => (f64::to_bits(1.0) as i64, types::I64X2),
                    I32 => (1, types::I32X4),
                    _ => (1, types::I64X2),
                };
                let ones = self.splat_int(lane, one_bits);
                let parts: Vec<Value> = if lane == types::I64X2 {
                    let (lo, hi) = self.widen_mask(x);
                    vec![lo, hi]
                } else {
                    vec![x]
                };
                let parts: Vec<Value> = parts
                    .into_iter()
                    .map(|m| {
                        let r = self.b.ins().band(m, ones);
                        if t.is_float() {
                            self.b.ins().bitcast(t.part(), MemFlagsData::new(), r)
                        } else {
                            r
                        }
                    })
                    .collect();
                if parts.len() == 2 {
                    VVal::two(t, parts[0], parts[1])
                } else {
                    VVal::one(t, parts[0])
                }
            }
            (f, Mask) => {
                let zero = match f {
                    F32 => self.splat_f32(0.0),
                    F64 => self.splat_f64(0.0),
                    _ => self.splat_int(f.part(), 0),
                };
                let zero = VVal::two(f, zero, zero);
                self.vcompare(BinaryOp::Ne, v, zero)
            }
            (f, t) => return Err(self.unsupported(format!("vector cast {f:?} to {t:?}"))),
        })
    }
}
