//! Lowers one loop-IR [`Kernel`] to a Cranelift function (the scalar path).
//!
//! # ABI
//!
//! Every kernel becomes `extern "C" fn(bufs: *const *mut u8, syms: *const i64, lo: i64,
//! hi: i64, status: *mut i64)`: `bufs[i]` is the base address of the kernel's `i`-th buffer
//! parameter (in [`Kernel::params`] order), `syms[j]` the value of its `j`-th symbol (in
//! [`Kernel::symbols`] order), `lo..hi` the range of the flat index of the kernel's parallel
//! nest ([`super::parallel`]) this call runs, and `*status` is set to 1 when a
//! data-dependent index (an embedding row, a gather or scatter position) fell outside its
//! buffer; such an access is clamped into the buffer instead of touching foreign memory.
//!
//! # Values
//!
//! f32, f16 and bf16 values are held as Cranelift `f32` (f16/bf16 values rounded after every
//! op, so they stay exact values of their dtype), f64 as `f64`, every integer dtype as an
//! `i64` wrapped to its width after every op, bools as `i8` 0/1. Arithmetic that IEEE f32
//! already rounds like the interpreter (`+ - * /`, `sqrt`, comparisons, `min`/`max` with the
//! interpreter's NaN and signed-zero rules) is inline; for f16/bf16 the f32 result is rounded
//! again, which is exact because f32 carries more than twice their precision plus two bits.
//! Transcendental functions, `pow`, float `mod`, integer floor division and f16 conversions
//! call the helpers of [`super::scalar`], which compute exactly what the interpreter does.
//! Indices are `i64` arithmetic over the [`Dim`] canonical form with Python floor semantics.
//!
//! # Vector code
//!
//! An innermost loop that [`vector`] accepts (elementwise bodies over contiguous or
//! broadcast f32/f64/i32/i64 data, and the f64 sums and min/max reductions of row kernels)
//! is emitted by [`vector`] instead: 4 lanes per vector, then this scalar code for the
//! remainder. Lanes compute bit for bit what the scalar code computes, except that a
//! vectorized f64 **sum adds in another order** (lane accumulators combined at the end):
//! softmax, RMSNorm and LayerNorm sums then agree with the interpreter within f32
//! accumulation error rather than bit for bit.

use super::math;
#[path = "vector.rs"]
pub mod vector;
use super::parallel::parallel_nest;
use super::scalar::{binary_code, dtype_code, unary_code};
use crate::loop_ir::{BufferId, Expr, Kernel, Stmt};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    types, AbiParam, Function, InstBuilder, MemFlagsData, Signature, Type, UserFuncName, Value,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_module::{FuncId, Linkage, Module};
use kiln_ir::numerics::{float_to_int, int_to_float, round_float, wrap_int};
use kiln_ir::{BinaryOp, DType, Dim, DimAtom, Scalar, UnaryOp};
use std::collections::{HashMap, HashSet};

/// Why a kernel could not be compiled.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CodegenError {
    /// The kernel uses something the CPU backend cannot express.
    #[error("kernel {kernel}: {message}")]
    Unsupported {
        /// Kernel name.
        kernel: String,
        /// What and why.
        message: String,
    },
    /// Cranelift rejected the function (a backend bug).
    #[error("kernel {kernel}: cranelift: {message}")]
    Cranelift {
        /// Kernel name.
        kernel: String,
        /// Cranelift's message.
        message: String,
    },
}

/// The Cranelift signature of every kernel function (see the module docs).
pub fn kernel_signature<M: Module>(module: &M) -> Signature {
    let ptr = module.target_config().pointer_type();
    let mut sig = module.make_signature();
    for t in [ptr, ptr, types::I64, types::I64, ptr] {
        sig.params.push(AbiParam::new(t));
    }
    sig
}

/// `kernel` as the CPU backend emits it: a later phase of a row kernel reads back the
/// values an earlier reduction phase stored instead of recomputing them
/// ([`crate::loop_ir::reuse`]; a softmax computes each `exp` once).
pub fn cpu_form(kernel: &Kernel) -> std::borrow::Cow<'_, Kernel> {
    match crate::loop_ir::reuse::forward_phase_values(kernel) {
        Some(k) => std::borrow::Cow::Owned(k),
        None => std::borrow::Cow::Borrowed(kernel),
    }
}

/// Declares and defines `kernel` in `module` as an exported function named `symbol`.
pub fn define_kernel<M: Module>(
    module: &mut M,
    kernel: &Kernel,
    symbol: &str,
) -> Result<FuncId, CodegenError> {
    let kernel = &*cpu_form(kernel);
    let cl_err = |message: String| CodegenError::Cranelift {
        kernel: kernel.name.clone(),
        message,
    };
    let sig = kernel_signature(module);
    let id = module
        .declare_function(symbol, Linkage::Export, &sig)
        .map_err(|e| cl_err(e.to_string()))?;
    let mut ctx = module.make_context();
    ctx.func = Function::with_name_signature(UserFuncName::user(0, id.as_u32()), sig);
    let mut fctx = FunctionBuilderContext::new();
    {
        let b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let mut e = Emitter::new(b, module, kernel);
        e.emit_kernel()?;
        let Emitter { b, .. } = e;
        b.finalize(module.target_config());
    }
    module
        .define_function(id, &mut ctx)
        .map_err(|e| cl_err(format!("{e:?}")))?;
    Ok(id)
}

/// The Cranelift type a dtype's values are held in.
fn cl_type(d: DType) -> Type {
    match d {
        DType::F64 => types::F64,
        DType::F32 | DType::F16 | DType::BF16 => types::F32,
        DType::Bool => types::I8,
        _ => types::I64,
    }
}

struct Emitter<'a, 'f, M: Module> {
    b: FunctionBuilder<'f>,
    module: &'a mut M,
    kernel: &'a Kernel,
    ptr: Type,
    /// Base address, dtype and element count of each buffer parameter.
    bufs: HashMap<BufferId, (Value, kiln_ir::DType, Dim)>,
    /// Kernel symbols (loaded at entry).
    syms: HashMap<String, Value>,
    /// Named scalars: loop variables, lets, declares, binds.
    vars: HashMap<String, (Variable, DType)>,
    /// Names bound from data (lets and binds of i64 values): indices using them are checked.
    data_syms: HashSet<String>,
    helpers: HashMap<&'static str, cranelift_codegen::ir::FuncRef>,
    status: Value,
    /// While a data-dependent index is computed: the OR of the overflow flags of its
    /// multiplications and additions (a huge or negative index such as `i64::MIN * 16`
    /// must not wrap back into the buffer and escape the range check).
    overflow: Option<Value>,
}

impl<'a, 'f, M: Module> Emitter<'a, 'f, M> {
    fn new(b: FunctionBuilder<'f>, module: &'a mut M, kernel: &'a Kernel) -> Self {
        let ptr = module.target_config().pointer_type();
        Emitter {
            b,
            module,
            kernel,
            ptr,
            bufs: HashMap::new(),
            syms: HashMap::new(),
            vars: HashMap::new(),
            data_syms: HashSet::new(),
            helpers: HashMap::new(),
            status: Value::from_u32(0),
            overflow: None,
        }
    }

    fn unsupported(&self, message: impl Into<String>) -> CodegenError {
        CodegenError::Unsupported {
            kernel: self.kernel.name.clone(),
            message: message.into(),
        }
    }

    fn emit_kernel(&mut self) -> Result<(), CodegenError> {
        let entry = self.b.create_block();
        self.b.append_block_params_for_function_params(entry);
        self.b.switch_to_block(entry);
        let params = self.b.block_params(entry).to_vec();
        let (bufs, syms, lo, hi) = (params[0], params[1], params[2], params[3]);
        self.status = params[4];
        let flags = MemFlagsData::trusted();
        for (i, p) in self.kernel.params.iter().enumerate() {
            let at = (i * self.ptr.bytes() as usize) as i32;
            let base = self.b.ins().load(self.ptr, flags, bufs, at);
            self.bufs.insert(p.id, (base, p.dtype, p.len.clone()));
        }
        for (j, s) in self.kernel.symbols.iter().enumerate() {
            let v = self.b.ins().load(types::I64, flags, syms, (j * 8) as i32);
            self.syms.insert(s.clone(), v);
        }
        let nest = parallel_nest(self.kernel);
        if nest.is_empty() {
            self.stmts(&self.kernel.body)?;
        } else if nest.len() == 1 && self.try_vector_loop(nest[0], lo, hi)? {
            // The kernel is one innermost loop over lo..hi, vectorized.
        } else {
            // One flat loop over lo..hi; each loop variable of the nest recovered by div/mod.
            let extents = nest
                .iter()
                .map(|l| self.dim(&l.extent))
                .collect::<Result<Vec<_>, _>>()?;
            let vars: Vec<String> = nest.iter().map(|l| l.var.clone()).collect();
            let kernel = self.kernel;
            let inner = &nest[nest.len() - 1].body;
            self.counted_loop(lo, hi, |e, flat| {
                let mut rem = flat;
                for (k, var) in vars.iter().enumerate().rev() {
                    let v = if k == 0 {
                        rem
                    } else {
                        let q = e.b.ins().udiv(rem, extents[k]);
                        let r = e.b.ins().urem(rem, extents[k]);
                        rem = q;
                        r
                    };
                    e.define(var, DType::I64, v);
                }
                let _ = kernel;
                e.stmts(inner)
            })?;
        }
        self.b.ins().return_(&[]);
        self.b.seal_all_blocks();
        Ok(())
    }

    /// `for i in start..end { body(i) }`.
    fn counted_loop(
        &mut self,
        start: Value,
        end: Value,
        body: impl FnOnce(&mut Self, Value) -> Result<(), CodegenError>,
    ) -> Result<(), CodegenError> {
        let var = self.b.declare_var(types::I64);
        self.b.def_var(var, start);
        let (header, block, exit) = (
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
        );
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(header);
        let i = self.b.use_var(var);
        let c = self.b.ins().icmp(IntCC::SignedLessThan, i, end);
        self.b.ins().brif(c, block, &[], exit, &[]);
        self.b.switch_to_block(block);
        let i = self.b.use_var(var);
        body(self, i)?;
        let i = self.b.use_var(var);
        let next = self.b.ins().iadd_imm_s(i, 1);
        self.b.def_var(var, next);
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(exit);
        Ok(())
    }

    /// Binds `name` to `v` (a new definition of its variable).
    fn define(&mut self, name: &str, dtype: DType, v: Value) {
        let ty = cl_type(dtype);
        let var = match self.vars.get(name) {
            Some(&(var, d)) if cl_type(d) == ty => var,
            _ => self.b.declare_var(ty),
        };
        self.vars.insert(name.to_string(), (var, dtype));
        self.b.def_var(var, v);
    }

    fn stmts(&mut self, body: &[Stmt]) -> Result<(), CodegenError> {
        for s in body {
            self.stmt(s)?;
        }
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt) -> Result<(), CodegenError> {
        match s {
            Stmt::Loop(l) => {
                let zero = self.b.ins().iconst(types::I64, 0);
                let n = self.dim(&l.extent)?;
                if self.try_vector_loop(l, zero, n)? {
                    return Ok(());
                }
                let var = l.var.clone();
                self.counted_loop(zero, n, |e, i| {
                    e.define(&var, DType::I64, i);
                    e.stmts(&l.body)
                })?;
            }
            Stmt::Let { var, dtype, value }
            | Stmt::Declare {
                var,
                dtype,
                init: value,
            } => {
                let v = self.expr(value)?;
                let v = self.coerce(v, value.dtype(), *dtype)?;
                if dtype.is_int() && value.may_read_memory() {
                    self.data_syms.insert(var.clone());
                }
                self.define(var, *dtype, v);
            }
            Stmt::Assign { var, value } => {
                let Some(&(v, d)) = self.vars.get(var) else {
                    return Err(self.unsupported(format!("assignment to undeclared `{var}`")));
                };
                let x = self.expr(value)?;
                let x = self.coerce(x, value.dtype(), d)?;
                self.b.def_var(v, x);
            }
            Stmt::Store {
                buffer,
                index,
                value,
            } => {
                let v = self.expr(value)?;
                let (base, dtype, _) = self.buffer(*buffer)?;
                let v = self.coerce(v, value.dtype(), dtype)?;
                let addr = self.address(*buffer, index)?;
                let _ = base;
                self.store(dtype, v, addr)?;
            }
            Stmt::If { cond, then } => {
                let c = self.expr(cond)?;
                let (t, merge) = (self.b.create_block(), self.b.create_block());
                self.b.ins().brif(c, t, &[], merge, &[]);
                self.b.switch_to_block(t);
                self.stmts(then)?;
                self.b.ins().jump(merge, &[]);
                self.b.switch_to_block(merge);
            }
        }
        Ok(())
    }

    /// A value of `from` held for `to` (identical dtypes, or a mismatch the IR's typing
    /// forbids — reported rather than miscompiled).
    fn coerce(&mut self, v: Value, from: DType, to: DType) -> Result<Value, CodegenError> {
        if from == to {
            Ok(v)
        } else {
            Err(self.unsupported(format!("a {from} value where {to} is expected")))
        }
    }

    fn buffer(&self, id: BufferId) -> Result<(Value, DType, Dim), CodegenError> {
        self.bufs
            .get(&id)
            .cloned()
            .ok_or_else(|| self.unsupported(format!("buffer {id} is not a parameter")))
    }

    // ---- indices ----

    fn dim(&mut self, d: &Dim) -> Result<Value, CodegenError> {
        let mut total: Option<Value> = None;
        let mut constant = 0i64;
        for term in d.terms() {
            if term.factors.is_empty() {
                constant = term.coefficient;
                continue;
            }
            let mut v: Option<Value> = None;
            for (atom, pow) in &term.factors {
                let a = self.atom(atom)?;
                for _ in 0..*pow {
                    v = Some(match v {
                        None => a,
                        Some(x) => self.index_op(BinaryOp::Mul, x, a),
                    });
                }
            }
            let mut v = v.expect("a term with factors");
            if term.coefficient != 1 {
                let c = self.b.ins().iconst(types::I64, term.coefficient);
                v = self.index_op(BinaryOp::Mul, v, c);
            }
            total = Some(match total {
                None => v,
                Some(t) => self.index_op(BinaryOp::Add, t, v),
            });
        }
        Ok(match total {
            None => self.b.ins().iconst(types::I64, constant),
            Some(t) if constant != 0 => {
                let c = self.b.ins().iconst(types::I64, constant);
                self.index_op(BinaryOp::Add, t, c)
            }
            Some(t) => t,
        })
    }

    /// `x * y` or `x + y` of index values; records overflow while `self.overflow` is set.
    fn index_op(&mut self, op: BinaryOp, x: Value, y: Value) -> Value {
        let Some(flag) = self.overflow else {
            return match op {
                BinaryOp::Mul => self.b.ins().imul(x, y),
                _ => self.b.ins().iadd(x, y),
            };
        };
        let (r, of) = match op {
            BinaryOp::Mul => self.b.ins().smul_overflow(x, y),
            _ => self.b.ins().sadd_overflow(x, y),
        };
        self.overflow = Some(self.b.ins().bor(flag, of));
        r
    }

    fn atom(&mut self, a: &DimAtom<'_>) -> Result<Value, CodegenError> {
        Ok(match a {
            DimAtom::Symbol(s) => self.symbol(s)?,
            DimAtom::FloorDiv(x, y) => {
                let (x, y) = (self.dim(x)?, self.dim(y)?);
                self.floor_div(x, y)
            }
            DimAtom::Mod(x, y) => {
                let (x, y) = (self.dim(x)?, self.dim(y)?);
                let q = self.floor_div(x, y);
                let qy = self.b.ins().imul(q, y);
                self.b.ins().isub(x, qy)
            }
            DimAtom::Min(x, y) => {
                let (x, y) = (self.dim(x)?, self.dim(y)?);
                self.b.ins().smin(x, y)
            }
            DimAtom::Max(x, y) => {
                let (x, y) = (self.dim(x)?, self.dim(y)?);
                self.b.ins().smax(x, y)
            }
        })
    }

    fn symbol(&mut self, s: &str) -> Result<Value, CodegenError> {
        if let Some(&(v, _)) = self.vars.get(s) {
            return Ok(self.b.use_var(v));
        }
        self.syms
            .get(s)
            .copied()
            .ok_or_else(|| self.unsupported(format!("unknown symbol `{s}`")))
    }

    /// Floor division that never traps (`x // 0` gives 0, `MIN // -1` wraps).
    fn floor_div(&mut self, x: Value, y: Value) -> Value {
        let zero = self.b.ins().iconst(types::I64, 0);
        let one = self.b.ins().iconst(types::I64, 1);
        let is0 = self.b.ins().icmp_imm_s(IntCC::Equal, y, 0);
        let ism1 = self.b.ins().icmp_imm_s(IntCC::Equal, y, -1);
        let bad = self.b.ins().bor(is0, ism1);
        let safe = self.b.ins().select(bad, one, y);
        let q = self.b.ins().sdiv(x, safe);
        let negx = self.b.ins().ineg(x);
        let q = self.b.ins().select(ism1, negx, q);
        // Round toward -inf: subtract 1 when the remainder is non-zero and its sign differs
        // from the divisor's.
        let qy = self.b.ins().imul(q, y);
        let r = self.b.ins().isub(x, qy);
        let rnz = self.b.ins().icmp_imm_s(IntCC::NotEqual, r, 0);
        let rneg = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, r, 0);
        let yneg = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, y, 0);
        let differ = self.b.ins().bxor(rneg, yneg);
        let adjust = self.b.ins().band(rnz, differ);
        let adj = self.b.ins().uextend(types::I64, adjust);
        let q = self.b.ins().isub(q, adj);
        self.b.ins().select(is0, zero, q)
    }

    /// The address of element `index` of `buffer`. An index that depends on data is clamped
    /// into the buffer, and `*status` set when it was outside.
    fn address(&mut self, buffer: BufferId, index: &Dim) -> Result<Value, CodegenError> {
        let (base, dtype, len) = self.buffer(buffer)?;
        let data = index.symbols().iter().any(|s| self.data_syms.contains(s));
        if data {
            self.overflow = Some(self.b.ins().iconst(types::I8, 0));
        }
        let mut i = self.dim(index)?;
        let wrapped = self.overflow.take();
        if let (true, Some(wrapped)) = (data, wrapped) {
            let n = self.dim(&len)?;
            let last = self.b.ins().iadd_imm_s(n, -1);
            let zero = self.b.ins().iconst(types::I64, 0);
            let clamped = self.b.ins().smax(i, zero);
            let clamped = self.b.ins().smin(clamped, last);
            let outside = self.b.ins().icmp(IntCC::NotEqual, clamped, i);
            let outside = self.b.ins().bor(outside, wrapped);
            let (flag, cont) = (self.b.create_block(), self.b.create_block());
            self.b.ins().brif(outside, flag, &[], cont, &[]);
            self.b.switch_to_block(flag);
            let one = self.b.ins().iconst(types::I64, 1);
            self.b
                .ins()
                .store(MemFlagsData::trusted(), one, self.status, 0);
            self.b.ins().jump(cont, &[]);
            self.b.switch_to_block(cont);
            i = self.b.ins().smax(clamped, zero);
        }
        let size = match dtype {
            DType::Quant(_) => return Ok(i), // LoadDequant passes the element index
            d => d.size_bytes().unwrap_or(1) as i64,
        };
        let off = if size == 1 {
            i
        } else {
            self.b.ins().imul_imm_s(i, size)
        };
        let off = if self.ptr == types::I64 {
            off
        } else {
            self.b.ins().ireduce(self.ptr, off)
        };
        Ok(self.b.ins().iadd(base, off))
    }

    // ---- memory ----

    fn load(&mut self, dtype: DType, addr: Value) -> Result<Value, CodegenError> {
        let f = MemFlagsData::trusted();
        let ins = self.b.ins();
        Ok(match dtype {
            DType::F32 => ins.load(types::F32, f, addr, 0),
            DType::F64 => ins.load(types::F64, f, addr, 0),
            DType::F16 => {
                let bits = ins.uload16(types::I32, f, addr, 0);
                self.call("kiln_f16_to_f32", &[bits])
            }
            DType::BF16 => {
                let bits = ins.uload16(types::I32, f, addr, 0);
                let bits = self.b.ins().ishl_imm_u(bits, 16);
                self.b.ins().bitcast(types::F32, MemFlagsData::new(), bits)
            }
            DType::I8 => ins.sload8(types::I64, f, addr, 0),
            DType::I16 => ins.sload16(types::I64, f, addr, 0),
            DType::I32 => ins.sload32(f, addr, 0),
            DType::I64 => ins.load(types::I64, f, addr, 0),
            DType::U8 => ins.uload8(types::I64, f, addr, 0),
            DType::U32 => ins.uload32(f, addr, 0),
            DType::Bool => ins.load(types::I8, f, addr, 0),
            DType::Quant(q) => return Err(self.unsupported(format!("plain load of {}", q.name()))),
        })
    }

    fn store(&mut self, dtype: DType, v: Value, addr: Value) -> Result<(), CodegenError> {
        let f = MemFlagsData::trusted();
        match dtype {
            DType::F32 | DType::F64 | DType::I64 | DType::Bool => {
                self.b.ins().store(f, v, addr, 0);
            }
            DType::F16 => {
                let bits = self.call("kiln_f32_to_f16", &[v]);
                self.b.ins().istore16(f, bits, addr, 0);
            }
            DType::BF16 => {
                // The value is an exact bf16: its f32 bits' top half.
                let bits = self.b.ins().bitcast(types::I32, MemFlagsData::new(), v);
                let bits = self.b.ins().ushr_imm_u(bits, 16);
                self.b.ins().istore16(f, bits, addr, 0);
            }
            DType::I8 | DType::U8 => {
                self.b.ins().istore8(f, v, addr, 0);
            }
            DType::I16 => {
                self.b.ins().istore16(f, v, addr, 0);
            }
            DType::I32 | DType::U32 => {
                self.b.ins().istore32(f, v, addr, 0);
            }
            DType::Quant(q) => {
                return Err(self.unsupported(format!("store into a {} buffer", q.name())))
            }
        }
        Ok(())
    }

    // ---- helpers ----

    fn call(&mut self, name: &'static str, args: &[Value]) -> Value {
        let f = match self.helpers.get(name) {
            Some(&f) => f,
            None => {
                let sig = helper_signature(&*self.module, name);
                let id = self
                    .module
                    .declare_function(name, Linkage::Import, &sig)
                    .expect("helper declarations never conflict");
                let f = self.module.declare_func_in_func(id, self.b.func);
                self.helpers.insert(name, f);
                f
            }
        };
        let call = self.b.ins().call(f, args);
        self.b.inst_results(call)[0]
    }

    fn code(&mut self, c: u32) -> Value {
        self.b.ins().iconst(types::I32, i64::from(c))
    }

    /// `round(x)` to f16/bf16 (x held as f32); identity for f32 and f64.
    fn round_to(&mut self, d: DType, x: Value) -> Value {
        if !matches!(d, DType::F16 | DType::BF16) {
            return x;
        }
        let wide = self.b.ins().fpromote(types::F64, x);
        let code = self.code(dtype_code(d));
        let r = self.call("kiln_round_f64", &[code, wide]);
        self.b.ins().fdemote(types::F32, r)
    }

    /// A float helper computed in f64 and rounded to `d`, for values held as `cl_type(d)`.
    fn float_helper(&mut self, name: &'static str, op: u32, d: DType, xs: &[Value]) -> Value {
        let wide: Vec<Value> = xs
            .iter()
            .map(|&x| {
                if d == DType::F64 {
                    x
                } else {
                    self.b.ins().fpromote(types::F64, x)
                }
            })
            .collect();
        let mut args = vec![self.code(op), self.code(dtype_code(d))];
        args.extend(wide);
        let r = self.call(name, &args);
        if d == DType::F64 {
            r
        } else {
            self.b.ins().fdemote(types::F32, r)
        }
    }

    // ---- expressions ----

    fn expr(&mut self, e: &Expr) -> Result<Value, CodegenError> {
        Ok(match e {
            Expr::Const { value, dtype } => self.constant(*value, *dtype)?,
            Expr::Index(d) => self.dim(d)?,
            Expr::Var { name, .. } => {
                let Some(&(v, _)) = self.vars.get(name) else {
                    return Err(self.unsupported(format!("unknown variable `{name}`")));
                };
                self.b.use_var(v)
            }
            Expr::Load { buffer, index, .. } => {
                let (_, dtype, _) = self.buffer(*buffer)?;
                let addr = self.address(*buffer, index)?;
                self.load(dtype, addr)?
            }
            Expr::LoadDequant {
                buffer,
                qtype,
                index,
            } => {
                let (base, _, _) = self.buffer(*buffer)?;
                let i = self.address(*buffer, index)?;
                let q = self.code(qtype.gguf_type_id());
                self.call("kiln_load_dequant", &[base, q, i])
            }
            Expr::Unary { op, dtype, x } => {
                let v = self.expr(x)?;
                self.unary(*op, *dtype, v)?
            }
            Expr::Binary { op, dtype, a, b } => {
                let (x, y) = (self.expr(a)?, self.expr(b)?);
                self.binary(*op, *dtype, x, y)?
            }
            Expr::Select { cond, a, b } => {
                let c = self.expr(cond)?;
                if is_cheap(a) && is_cheap(b) {
                    let (x, y) = (self.expr(a)?, self.expr(b)?);
                    self.b.ins().select(c, x, y)
                } else {
                    let (ta, tb, merge) = (
                        self.b.create_block(),
                        self.b.create_block(),
                        self.b.create_block(),
                    );
                    let r = self.b.append_block_param(merge, cl_type(a.dtype()));
                    self.b.ins().brif(c, ta, &[], tb, &[]);
                    self.b.switch_to_block(ta);
                    let x = self.expr(a)?;
                    self.b.ins().jump(merge, &[x.into()]);
                    self.b.switch_to_block(tb);
                    let y = self.expr(b)?;
                    self.b.ins().jump(merge, &[y.into()]);
                    self.b.switch_to_block(merge);
                    r
                }
            }
            Expr::Cast { to, x } => {
                let v = self.expr(x)?;
                self.cast(x.dtype(), *to, v)?
            }
            Expr::Bind { var, value, body } => {
                let v = self.expr(value)?;
                if value.dtype() != DType::I64 {
                    return Err(self.unsupported(format!("bind of a non-i64 to `{var}`")));
                }
                let saved = self.vars.get(var).copied();
                let was_data = self.data_syms.contains(var);
                self.data_syms.insert(var.clone());
                self.define(var, DType::I64, v);
                let r = self.expr(body)?;
                match saved {
                    Some(s) => {
                        self.vars.insert(var.clone(), s);
                    }
                    None => {
                        self.vars.remove(var);
                    }
                }
                if !was_data {
                    self.data_syms.remove(var);
                }
                r
            }
        })
    }

    fn constant(&mut self, value: Scalar, d: DType) -> Result<Value, CodegenError> {
        let ins = self.b.ins();
        Ok(match (value, d) {
            (Scalar::Float(v), DType::F64) => ins.f64const(v),
            (Scalar::Int(v), DType::F64) => ins.f64const(v as f64),
            (Scalar::Float(v), d) if d.is_float() => ins.f32const(round_float(d, v) as f32),
            (Scalar::Int(v), d) if d.is_float() => ins.f32const(int_to_float(d, v) as f32),
            (Scalar::Bool(b), d) if d.is_float() => ins.f32const(f32::from(u8::from(b))),
            (Scalar::Int(v), d) if d.is_int() => ins.iconst(types::I64, wrap_int(d, v)),
            (Scalar::Float(v), d) if d.is_int() => ins.iconst(types::I64, float_to_int(d, v)),
            (Scalar::Bool(b), d) if d.is_int() => ins.iconst(types::I64, i64::from(b)),
            (Scalar::Bool(b), DType::Bool) => ins.iconst(types::I8, i64::from(b)),
            (Scalar::Int(v), DType::Bool) => ins.iconst(types::I8, i64::from(v != 0)),
            (Scalar::Float(v), DType::Bool) => ins.iconst(types::I8, i64::from(v != 0.0)),
            (_, d) => return Err(self.unsupported(format!("a constant of type {d}"))),
        })
    }

    fn wrap(&mut self, d: DType, v: Value) -> Value {
        let ins = self.b.ins();
        match d {
            DType::I8 => {
                let n = ins.ireduce(types::I8, v);
                self.b.ins().sextend(types::I64, n)
            }
            DType::I16 => {
                let n = ins.ireduce(types::I16, v);
                self.b.ins().sextend(types::I64, n)
            }
            DType::I32 => {
                let n = ins.ireduce(types::I32, v);
                self.b.ins().sextend(types::I64, n)
            }
            DType::U8 => {
                let n = ins.ireduce(types::I8, v);
                self.b.ins().uextend(types::I64, n)
            }
            DType::U32 => {
                let n = ins.ireduce(types::I32, v);
                self.b.ins().uextend(types::I64, n)
            }
            _ => v,
        }
    }

    fn unary(&mut self, op: UnaryOp, d: DType, x: Value) -> Result<Value, CodegenError> {
        if d.is_float() {
            let ty = cl_type(d);
            return Ok(match op {
                UnaryOp::Neg => self.b.ins().fneg(x),
                UnaryOp::Abs => self.b.ins().fabs(x),
                UnaryOp::Floor => self.b.ins().floor(x),
                UnaryOp::Ceil => self.b.ins().ceil(x),
                UnaryOp::Round => self.b.ins().nearest(x),
                UnaryOp::Sqrt if matches!(d, DType::F32 | DType::F64) => self.b.ins().sqrt(x),
                UnaryOp::Recip if matches!(d, DType::F32 | DType::F64) => {
                    let one = self.float_const(ty, 1.0);
                    self.b.ins().fdiv(one, x)
                }
                UnaryOp::Rsqrt if d == DType::F32 => {
                    // 1 / sqrt(x) in f64, rounded once: the interpreter's value.
                    let w = self.b.ins().fpromote(types::F64, x);
                    let s = self.b.ins().sqrt(w);
                    let one = self.b.ins().f64const(1.0);
                    let r = self.b.ins().fdiv(one, s);
                    self.b.ins().fdemote(types::F32, r)
                }
                UnaryOp::Sign => {
                    let (one, m1, zero) = (
                        self.float_const(ty, 1.0),
                        self.float_const(ty, -1.0),
                        self.float_const(ty, 0.0),
                    );
                    let nan = self.b.ins().fcmp(FloatCC::Unordered, x, x);
                    let r = self.b.ins().select(nan, x, zero);
                    let lt = self.b.ins().fcmp(FloatCC::LessThan, x, zero);
                    let r = self.b.ins().select(lt, m1, r);
                    let gt = self.b.ins().fcmp(FloatCC::GreaterThan, x, zero);
                    self.b.ins().select(gt, one, r)
                }
                // Inline (see `math`): exp in f32, the IR's definition of it.
                UnaryOp::Exp if d == DType::F32 => math::exp_f32(&mut self.b, x),
                UnaryOp::Exp | UnaryOp::Tanh if d != DType::F64 => {
                    // f16/bf16 exp: the f32 value rounded once more; tanh in f64, rounded
                    // once.
                    let r = if op == UnaryOp::Exp {
                        let e = math::exp_f32(&mut self.b, x);
                        self.b.ins().fpromote(types::F64, e)
                    } else {
                        let w = self.b.ins().fpromote(types::F64, x);
                        math::tanh_f64_for_f32(&mut self.b, w)
                    };
                    if d == DType::F32 {
                        self.b.ins().fdemote(types::F32, r)
                    } else {
                        let c = self.code(dtype_code(d));
                        let r = self.call("kiln_round_f64", &[c, r]);
                        self.b.ins().fdemote(types::F32, r)
                    }
                }
                UnaryOp::Not => return Err(self.unsupported("`not` of a float")),
                _ => self.float_helper("kiln_unary_f64", unary_code(op), d, &[x]),
            });
        }
        if d.is_int() {
            let r = match op {
                UnaryOp::Neg => self.b.ins().ineg(x),
                UnaryOp::Abs => self.b.ins().iabs(x),
                UnaryOp::Not => self.b.ins().bnot(x),
                UnaryOp::Sign => {
                    let (m1, one) = (
                        self.b.ins().iconst(types::I64, -1),
                        self.b.ins().iconst(types::I64, 1),
                    );
                    let s = self.b.ins().smax(x, m1);
                    self.b.ins().smin(s, one)
                }
                _ => return Err(self.unsupported(format!("{} of an integer", op.name()))),
            };
            return Ok(self.wrap(d, r));
        }
        if d == DType::Bool && op == UnaryOp::Not {
            return Ok(self.b.ins().bxor_imm_u(x, 1));
        }
        Err(self.unsupported(format!("{} on {d}", op.name())))
    }

    fn float_const(&mut self, ty: Type, v: f64) -> Value {
        if ty == types::F64 {
            self.b.ins().f64const(v)
        } else {
            self.b.ins().f32const(v as f32)
        }
    }

    fn binary(
        &mut self,
        op: BinaryOp,
        d: DType,
        x: Value,
        y: Value,
    ) -> Result<Value, CodegenError> {
        if op.is_comparison() {
            return Ok(if d.is_float() {
                let cc = match op {
                    BinaryOp::Eq => FloatCC::Equal,
                    BinaryOp::Ne => FloatCC::NotEqual,
                    BinaryOp::Lt => FloatCC::LessThan,
                    BinaryOp::Le => FloatCC::LessThanOrEqual,
                    BinaryOp::Gt => FloatCC::GreaterThan,
                    _ => FloatCC::GreaterThanOrEqual,
                };
                self.b.ins().fcmp(cc, x, y)
            } else {
                // Bools compare as unsigned 0/1, integers as signed i64 (u32 values fit).
                let unsigned = d == DType::Bool;
                let cc = match (op, unsigned) {
                    (BinaryOp::Eq, _) => IntCC::Equal,
                    (BinaryOp::Ne, _) => IntCC::NotEqual,
                    (BinaryOp::Lt, false) => IntCC::SignedLessThan,
                    (BinaryOp::Le, false) => IntCC::SignedLessThanOrEqual,
                    (BinaryOp::Gt, false) => IntCC::SignedGreaterThan,
                    (BinaryOp::Ge, false) => IntCC::SignedGreaterThanOrEqual,
                    (BinaryOp::Lt, true) => IntCC::UnsignedLessThan,
                    (BinaryOp::Le, true) => IntCC::UnsignedLessThanOrEqual,
                    (BinaryOp::Gt, true) => IntCC::UnsignedGreaterThan,
                    (_, true) => IntCC::UnsignedGreaterThanOrEqual,
                    (_, false) => IntCC::SignedGreaterThanOrEqual,
                };
                self.b.ins().icmp(cc, x, y)
            });
        }
        if d.is_float() {
            let r = match op {
                BinaryOp::Add => self.b.ins().fadd(x, y),
                BinaryOp::Sub => self.b.ins().fsub(x, y),
                BinaryOp::Mul => self.b.ins().fmul(x, y),
                BinaryOp::Div => self.b.ins().fdiv(x, y),
                BinaryOp::Max | BinaryOp::Min => {
                    // The interpreter's rules: NaN if either is NaN, else the first operand on
                    // ties (so signed zeros keep their order).
                    let cc = if op == BinaryOp::Max {
                        FloatCC::GreaterThanOrEqual
                    } else {
                        FloatCC::LessThanOrEqual
                    };
                    let pick = self.b.ins().fcmp(cc, x, y);
                    let r = self.b.ins().select(pick, x, y);
                    let nan = self.b.ins().fcmp(FloatCC::Unordered, x, y);
                    let sum = self.b.ins().fadd(x, y);
                    return Ok(self.b.ins().select(nan, sum, r));
                }
                BinaryOp::Pow | BinaryOp::Mod => {
                    return Ok(self.float_helper("kiln_binary_f64", binary_code(op), d, &[x, y]))
                }
                _ => return Err(self.unsupported(format!("{} on {d}", op.name()))),
            };
            return Ok(self.round_to(d, r));
        }
        if d.is_int() {
            let r = match op {
                BinaryOp::Add => self.b.ins().iadd(x, y),
                BinaryOp::Sub => self.b.ins().isub(x, y),
                BinaryOp::Mul => self.b.ins().imul(x, y),
                BinaryOp::Max => self.b.ins().smax(x, y),
                BinaryOp::Min => self.b.ins().smin(x, y),
                BinaryOp::And => self.b.ins().band(x, y),
                BinaryOp::Or => self.b.ins().bor(x, y),
                BinaryOp::Xor => self.b.ins().bxor(x, y),
                BinaryOp::Div | BinaryOp::Mod => {
                    let (o, c) = (self.code(binary_code(op)), self.code(dtype_code(d)));
                    return Ok(self.call("kiln_binary_i64", &[o, c, x, y]));
                }
                _ => return Err(self.unsupported(format!("{} on {d}", op.name()))),
            };
            return Ok(self.wrap(d, r));
        }
        if d == DType::Bool {
            return Ok(match op {
                BinaryOp::And => self.b.ins().band(x, y),
                BinaryOp::Or => self.b.ins().bor(x, y),
                BinaryOp::Xor => self.b.ins().bxor(x, y),
                _ => return Err(self.unsupported(format!("{} on bool", op.name()))),
            });
        }
        Err(self.unsupported(format!("{} on {d}", op.name())))
    }

    fn cast(&mut self, from: DType, to: DType, v: Value) -> Result<Value, CodegenError> {
        if from == to {
            return Ok(v);
        }
        let (ft, tt) = (cl_type(from), cl_type(to));
        Ok(match (from, to) {
            (f, t) if f.is_float() && t.is_float() => match (ft == types::F64, tt == types::F64) {
                (false, true) => self.b.ins().fpromote(types::F64, v),
                (true, false) if t == DType::F32 => self.b.ins().fdemote(types::F32, v),
                (true, false) => {
                    let c = self.code(dtype_code(t));
                    let r = self.call("kiln_round_f64", &[c, v]);
                    self.b.ins().fdemote(types::F32, r)
                }
                // Between f32-held dtypes: exact widening, or one rounding to f16/bf16 (the
                // f32 value is exact, so rounding it is the interpreter's single rounding).
                _ => self.round_to(t, v),
            },
            (f, t) if f.is_float() && t.is_int() => {
                let i = self.b.ins().fcvt_to_sint_sat(types::I64, v);
                let (lo, hi) = t.int_range().unwrap_or((i64::MIN, i64::MAX));
                if (lo, hi) == (i64::MIN, i64::MAX) {
                    i
                } else {
                    let (lo, hi) = (
                        self.b.ins().iconst(types::I64, lo),
                        self.b.ins().iconst(types::I64, hi),
                    );
                    let c = self.b.ins().smax(i, lo);
                    self.b.ins().smin(c, hi)
                }
            }
            (f, DType::Bool) if f.is_float() => {
                let zero = self.float_const(ft, 0.0);
                self.b.ins().fcmp(FloatCC::NotEqual, v, zero)
            }
            (f, t) if f.is_int() && t.is_float() => match t {
                DType::F32 => self.b.ins().fcvt_from_sint(types::F32, v),
                DType::F64 => self.b.ins().fcvt_from_sint(types::F64, v),
                _ => {
                    let w = self.b.ins().fcvt_from_sint(types::F64, v);
                    let c = self.code(dtype_code(t));
                    let r = self.call("kiln_round_f64", &[c, w]);
                    self.b.ins().fdemote(types::F32, r)
                }
            },
            (f, t) if f.is_int() && t.is_int() => self.wrap(t, v),
            (f, DType::Bool) if f.is_int() => self.b.ins().icmp_imm_s(IntCC::NotEqual, v, 0),
            (DType::Bool, t) if t.is_float() => {
                let w = self.b.ins().uextend(types::I64, v);
                if tt == types::F64 {
                    self.b.ins().fcvt_from_uint(types::F64, w)
                } else {
                    self.b.ins().fcvt_from_uint(types::F32, w)
                }
            }
            (DType::Bool, t) if t.is_int() => self.b.ins().uextend(types::I64, v),
            _ => return Err(self.unsupported(format!("cast from {from} to {to}"))),
        })
    }
}

/// True when evaluating `e` cannot fault or call out: both sides of a select may then be
/// evaluated eagerly.
fn is_cheap(e: &Expr) -> bool {
    match e {
        Expr::Const { .. } | Expr::Var { .. } | Expr::Index(_) => true,
        Expr::Cast { x, .. } => is_cheap(x) && !x.dtype().is_float(),
        _ => false,
    }
}

/// The signature of a helper of [`super::scalar`].
fn helper_signature<M: Module>(module: &M, name: &str) -> Signature {
    let ptr = module.target_config().pointer_type();
    let (params, ret): (Vec<Type>, Type) = match name {
        "kiln_unary_f64" => (vec![types::I32, types::I32, types::F64], types::F64),
        "kiln_binary_f64" => (
            vec![types::I32, types::I32, types::F64, types::F64],
            types::F64,
        ),
        "kiln_round_f64" => (vec![types::I32, types::F64], types::F64),
        "kiln_binary_i64" => (
            vec![types::I32, types::I32, types::I64, types::I64],
            types::I64,
        ),
        "kiln_f16_to_f32" => (vec![types::I32], types::F32),
        "kiln_f32_to_f16" => (vec![types::F32], types::I32),
        _ => (vec![ptr, types::I32, types::I64], types::F32), // kiln_load_dequant
    };
    let mut sig = module.make_signature();
    sig.params.extend(params.into_iter().map(AbiParam::new));
    sig.returns.push(AbiParam::new(ret));
    sig
}
