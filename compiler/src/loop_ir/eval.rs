//! A straightforward evaluator of loop-IR kernels on concrete buffers: how lowering is tested
//! before any backend exists.
//!
//! Numerics are exactly those of [`kiln_ir::interp`]: floats are held as f64 values of their
//! dtype, integers as i64 within their dtype's range, and every `Unary`/`Binary` computes in
//! f64 / wrapping i64 and rounds / wraps to its dtype (see the [`super`] docs). Loop
//! annotations are ignored (they never change semantics); loops run in order.

use super::{BufferId, Expr, Kernel, Stmt};
use kiln_ir::quant::{dequantize_block, QuantType};
use kiln_ir::{BinaryOp, Bindings, DType, Dim, DimError, Scalar, Storage, Tensor, UnaryOp};
use std::collections::HashMap;

/// The elements of a buffer, widened as the reference interpreter holds them.
#[derive(Clone, Debug, PartialEq)]
pub enum BufData {
    /// Float elements (each a value of the buffer's dtype).
    F(Vec<f64>),
    /// Integer elements.
    I(Vec<i64>),
    /// Bools.
    B(Vec<bool>),
    /// Raw GGUF blocks.
    Q(Vec<u8>),
}

/// A concrete buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    /// Element type.
    pub dtype: DType,
    /// Elements.
    pub data: BufData,
}

/// Why a kernel could not be evaluated.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum LoopEvalError {
    /// A dim could not be evaluated.
    #[error("kernel {kernel}: {source}")]
    Dim {
        /// Kernel name.
        kernel: String,
        /// The cause.
        source: DimError,
    },
    /// A buffer the kernel uses was not given.
    #[error("kernel {kernel}: buffer {buffer} not given")]
    MissingBuffer {
        /// Kernel name.
        kernel: String,
        /// The buffer.
        buffer: BufferId,
    },
    /// An index outside a buffer.
    #[error("kernel {kernel}: index {index} outside buffer {buffer} of {len} elements")]
    OutOfBounds {
        /// Kernel name.
        kernel: String,
        /// The buffer.
        buffer: BufferId,
        /// The index.
        index: i64,
        /// The buffer's length.
        len: usize,
    },
    /// A malformed kernel (unknown variable, value of the wrong kind).
    #[error("kernel {kernel}: {message}")]
    Malformed {
        /// Kernel name.
        kernel: String,
        /// What is wrong.
        message: String,
    },
}

/// A scalar value during evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Val {
    F(f64),
    I(i64),
    B(bool),
}

impl Buffer {
    /// A zero-filled buffer of `len` elements (`dtype` not block-quantized).
    pub fn zeros(dtype: DType, len: usize) -> Buffer {
        let data = if dtype.is_float() {
            BufData::F(vec![0.0; len])
        } else if dtype.is_int() {
            BufData::I(vec![0; len])
        } else if dtype.is_bool() {
            BufData::B(vec![false; len])
        } else {
            BufData::Q(vec![0; dtype.bytes_for(len).unwrap_or(0)])
        };
        Buffer { dtype, data }
    }

    /// The buffer holding a tensor's elements (row-major).
    pub fn from_tensor(t: &Tensor) -> Buffer {
        let data = match t.storage() {
            Storage::Quant(_, b) => BufData::Q(b.clone()),
            Storage::Bool(v) => BufData::B(v.clone()),
            _ if t.dtype().is_float() => BufData::F(t.to_f64_vec().unwrap_or_default()),
            _ => BufData::I(t.to_i64_vec().unwrap_or_default()),
        };
        Buffer {
            dtype: t.dtype(),
            data,
        }
    }

    /// The buffer as a tensor of `shape` (`None` if the element count or dtype disagree).
    pub fn to_tensor(&self, shape: Vec<usize>) -> Option<Tensor> {
        use half::{bf16, f16};
        let storage = match (self.dtype, &self.data) {
            (DType::F32, BufData::F(v)) => Storage::F32(v.iter().map(|&x| x as f32).collect()),
            (DType::F16, BufData::F(v)) => {
                Storage::F16(v.iter().map(|&x| f16::from_f64(x)).collect())
            }
            (DType::BF16, BufData::F(v)) => {
                Storage::BF16(v.iter().map(|&x| bf16::from_f64(x)).collect())
            }
            (DType::F64, BufData::F(v)) => Storage::F64(v.clone()),
            (DType::I8, BufData::I(v)) => Storage::I8(v.iter().map(|&x| x as i8).collect()),
            (DType::I16, BufData::I(v)) => Storage::I16(v.iter().map(|&x| x as i16).collect()),
            (DType::I32, BufData::I(v)) => Storage::I32(v.iter().map(|&x| x as i32).collect()),
            (DType::I64, BufData::I(v)) => Storage::I64(v.clone()),
            (DType::U8, BufData::I(v)) => Storage::U8(v.iter().map(|&x| x as u8).collect()),
            (DType::U32, BufData::I(v)) => Storage::U32(v.iter().map(|&x| x as u32).collect()),
            (DType::Bool, BufData::B(v)) => Storage::Bool(v.clone()),
            (DType::Quant(q), BufData::Q(b)) => Storage::Quant(q, b.clone()),
            _ => return None,
        };
        Tensor::new(shape, storage).ok()
    }

    /// Number of elements (bytes for block-quantized data).
    pub fn len(&self) -> usize {
        match &self.data {
            BufData::F(v) => v.len(),
            BufData::I(v) => v.len(),
            BufData::B(v) => v.len(),
            BufData::Q(v) => v.len(),
        }
    }

    /// True if the buffer holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Runs `kernel` over `buffers` (read and written in place) with symbol values `bindings`.
pub fn eval_kernel(
    kernel: &Kernel,
    buffers: &mut HashMap<BufferId, Buffer>,
    bindings: &Bindings,
) -> Result<(), LoopEvalError> {
    for p in &kernel.params {
        if !buffers.contains_key(&p.id) {
            return Err(LoopEvalError::MissingBuffer {
                kernel: kernel.name.clone(),
                buffer: p.id,
            });
        }
    }
    let mut ev = Evaluator {
        kernel: &kernel.name,
        buffers,
        bindings: bindings.clone(),
        scalars: HashMap::new(),
        block_cache: None,
    };
    ev.stmts(&kernel.body)
}

struct Evaluator<'a> {
    kernel: &'a str,
    buffers: &'a mut HashMap<BufferId, Buffer>,
    bindings: Bindings,
    scalars: HashMap<String, Val>,
    /// The last dequantized block: (buffer, block index, values).
    block_cache: Option<(BufferId, usize, Vec<f32>)>,
}

impl Evaluator<'_> {
    fn bad(&self, message: impl Into<String>) -> LoopEvalError {
        LoopEvalError::Malformed {
            kernel: self.kernel.to_string(),
            message: message.into(),
        }
    }

    fn dim(&self, d: &Dim) -> Result<i64, LoopEvalError> {
        d.eval(&self.bindings).map_err(|source| LoopEvalError::Dim {
            kernel: self.kernel.to_string(),
            source,
        })
    }

    fn slot(&self, buffer: BufferId, index: &Dim) -> Result<usize, LoopEvalError> {
        let i = self.dim(index)?;
        let b = self
            .buffers
            .get(&buffer)
            .ok_or_else(|| LoopEvalError::MissingBuffer {
                kernel: self.kernel.to_string(),
                buffer,
            })?;
        let len = match (&b.data, b.dtype) {
            (BufData::Q(bytes), DType::Quant(q)) => q.elements_for(bytes.len()).unwrap_or(0),
            _ => b.len(),
        };
        match usize::try_from(i) {
            Ok(u) if u < len => Ok(u),
            _ => Err(LoopEvalError::OutOfBounds {
                kernel: self.kernel.to_string(),
                buffer,
                index: i,
                len,
            }),
        }
    }

    fn stmts(&mut self, body: &[Stmt]) -> Result<(), LoopEvalError> {
        for s in body {
            self.stmt(s)?;
        }
        Ok(())
    }

    fn stmt(&mut self, s: &Stmt) -> Result<(), LoopEvalError> {
        match s {
            Stmt::Loop(l) => {
                let n = self.dim(&l.extent)?;
                for i in 0..n.max(0) {
                    self.bindings.set(&l.var, i);
                    self.stmts(&l.body)?;
                }
            }
            Stmt::Let { var, value, .. }
            | Stmt::Declare {
                var, init: value, ..
            } => {
                let v = self.expr(value)?;
                if let Val::I(i) = v {
                    self.bindings.set(var, i);
                }
                self.scalars.insert(var.clone(), v);
            }
            Stmt::Assign { var, value } => {
                let v = self.expr(value)?;
                if !self.scalars.contains_key(var) {
                    return Err(self.bad(format!("assignment to undeclared `{var}`")));
                }
                self.scalars.insert(var.clone(), v);
            }
            Stmt::Store {
                buffer,
                index,
                value,
            } => {
                let v = self.expr(value)?;
                let i = self.slot(*buffer, index)?;
                let b = self.buffers.get_mut(buffer).expect("checked by slot");
                match (&mut b.data, v) {
                    (BufData::F(d), Val::F(x)) => d[i] = x,
                    (BufData::I(d), Val::I(x)) => d[i] = x,
                    (BufData::B(d), Val::B(x)) => d[i] = x,
                    _ => return Err(self.bad(format!("store of {v:?} into {buffer}"))),
                }
            }
            Stmt::If { cond, then } => {
                if self.expr(cond)? == Val::B(true) {
                    self.stmts(then)?;
                }
            }
        }
        Ok(())
    }

    fn load(&mut self, buffer: BufferId, index: &Dim) -> Result<Val, LoopEvalError> {
        let i = self.slot(buffer, index)?;
        Ok(match &self.buffers[&buffer].data {
            BufData::F(d) => Val::F(d[i]),
            BufData::I(d) => Val::I(d[i]),
            BufData::B(d) => Val::B(d[i]),
            BufData::Q(_) => return Err(self.bad(format!("plain load of quantized {buffer}"))),
        })
    }

    fn load_dequant(
        &mut self,
        buffer: BufferId,
        q: QuantType,
        index: &Dim,
    ) -> Result<Val, LoopEvalError> {
        let i = self.slot(buffer, index)?;
        let (block, slot) = (i / q.block_size(), i % q.block_size());
        if let Some((b, k, vals)) = &self.block_cache {
            if *b == buffer && *k == block {
                return Ok(Val::F(f64::from(vals[slot])));
            }
        }
        let BufData::Q(bytes) = &self.buffers[&buffer].data else {
            return Err(self.bad(format!("dequantizing load of plain {buffer}")));
        };
        let at = block * q.block_bytes();
        let mut vals = vec![0.0f32; q.block_size()];
        dequantize_block(q, &bytes[at..at + q.block_bytes()], &mut vals)
            .map_err(|e| self.bad(e.to_string()))?;
        let v = f64::from(vals[slot]);
        self.block_cache = Some((buffer, block, vals));
        Ok(Val::F(v))
    }

    fn expr(&mut self, e: &Expr) -> Result<Val, LoopEvalError> {
        Ok(match e {
            Expr::Const { value, dtype } => match value {
                Scalar::Float(v) => Val::F(round_float(*dtype, *v)),
                Scalar::Int(v) if dtype.is_float() => Val::F(int_to_float(*dtype, *v)),
                Scalar::Int(v) => Val::I(wrap_int(*dtype, *v)),
                Scalar::Bool(b) => Val::B(*b),
            },
            Expr::Index(d) => Val::I(self.dim(d)?),
            Expr::Var { name, .. } => *self
                .scalars
                .get(name)
                .ok_or_else(|| self.bad(format!("unknown variable `{name}`")))?,
            Expr::Load { buffer, index, .. } => self.load(*buffer, index)?,
            Expr::LoadDequant {
                buffer,
                qtype,
                index,
            } => self.load_dequant(*buffer, *qtype, index)?,
            Expr::Unary { op, dtype, x } => {
                let x = self.expr(x)?;
                unary(*op, *dtype, x).ok_or_else(|| self.bad(format!("{} on {x:?}", op.name())))?
            }
            Expr::Binary { op, dtype, a, b } => {
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                binary(*op, *dtype, a, b)
                    .ok_or_else(|| self.bad(format!("{} on {a:?}, {b:?}", op.name())))?
            }
            Expr::Select { cond, a, b } => match self.expr(cond)? {
                Val::B(true) => self.expr(a)?,
                Val::B(false) => self.expr(b)?,
                v => return Err(self.bad(format!("select on {v:?}"))),
            },
            Expr::Cast { to, x } => cast(*to, self.expr(x)?),
            Expr::Bind { var, value, body } => {
                let Val::I(i) = self.expr(value)? else {
                    return Err(self.bad(format!("bind of a non-integer to `{var}`")));
                };
                self.bindings.set(var, i);
                self.expr(body)?
            }
        })
    }
}

// ---- numerics: the interpreter's own (`kiln_ir::numerics`), so results agree bit for bit ----

use kiln_ir::numerics::{
    binary_float, binary_int, compare, float_to_int, int_to_float, round_float, unary_rounded,
    wrap_int,
};

fn cast(to: DType, x: Val) -> Val {
    match x {
        Val::F(v) if to.is_float() => Val::F(round_float(to, v)),
        Val::F(v) if to.is_int() => Val::I(float_to_int(to, v)),
        Val::F(v) => Val::B(v != 0.0),
        Val::I(v) if to.is_float() => Val::F(int_to_float(to, v)),
        Val::I(v) if to.is_int() => Val::I(wrap_int(to, v)),
        Val::I(v) => Val::B(v != 0),
        Val::B(v) if to.is_float() => Val::F(f64::from(u8::from(v))),
        Val::B(v) if to.is_int() => Val::I(i64::from(v)),
        Val::B(v) => Val::B(v),
    }
}

fn unary(u: UnaryOp, d: DType, x: Val) -> Option<Val> {
    Some(match x {
        Val::F(_) if u == UnaryOp::Not => return None,
        Val::F(x) => Val::F(unary_rounded(u, d, x)),
        Val::I(x) => Val::I(wrap_int(
            d,
            match u {
                UnaryOp::Neg => x.wrapping_neg(),
                UnaryOp::Abs => x.wrapping_abs(),
                UnaryOp::Not => !x,
                UnaryOp::Sign => x.signum(),
                _ => return None,
            },
        )),
        Val::B(x) if u == UnaryOp::Not => Val::B(!x),
        Val::B(_) => return None,
    })
}

fn binary(op: BinaryOp, d: DType, a: Val, b: Val) -> Option<Val> {
    Some(match (a, b) {
        (Val::F(x), Val::F(y)) if op.is_comparison() => Val::B(compare(op, x, y)),
        (Val::I(x), Val::I(y)) if op.is_comparison() => Val::B(compare(op, x, y)),
        (Val::B(x), Val::B(y)) if op.is_comparison() => Val::B(compare(op, x, y)),
        (Val::F(_), Val::F(_)) if op.is_logical() => return None,
        (Val::F(x), Val::F(y)) => Val::F(round_float(d, binary_float(op, x, y))),
        (Val::I(_), Val::I(_)) if op == BinaryOp::Pow => return None,
        (Val::I(x), Val::I(y)) => Val::I(wrap_int(d, binary_int(op, x, y))),
        (Val::B(x), Val::B(y)) => Val::B(match op {
            BinaryOp::And => x & y,
            BinaryOp::Or => x | y,
            BinaryOp::Xor => x ^ y,
            _ => return None,
        }),
        _ => return None,
    })
}
