//! The interpreter's internal representation of a tensor value, and the rounding rules that
//! keep every value exactly representable in its dtype.

use super::error::Ctx;
use super::EvalError;
use crate::dtype::DType;
use crate::quant::{self, QuantType};
use crate::tensor::{Storage, Tensor};
use half::{bf16, f16};

/// The elements of a value, widened: every float dtype is held as `f64` (each element exactly
/// a value of its dtype), every integer dtype as `i64` (each element in its dtype's range),
/// bools as `bool`, block-quantized data as its raw GGUF bytes.
#[derive(Clone, Debug)]
pub(crate) enum Data {
    /// f32, f16, bf16 or f64 elements.
    F(Vec<f64>),
    /// i8, i16, i32, i64, u8 or u32 elements.
    I(Vec<i64>),
    /// bool elements.
    B(Vec<bool>),
    /// Raw blocks of a block-quantized dtype.
    Q(Vec<u8>),
}

/// A concrete tensor value during evaluation.
#[derive(Clone, Debug)]
pub(crate) struct Value {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Data,
}

impl Data {
    /// Picks the elements at `idx` (not for quantized data).
    pub fn take(&self, idx: &[usize]) -> Option<Data> {
        Some(match self {
            Data::F(v) => Data::F(idx.iter().map(|&i| v[i]).collect()),
            Data::I(v) => Data::I(idx.iter().map(|&i| v[i]).collect()),
            Data::B(v) => Data::B(idx.iter().map(|&i| v[i]).collect()),
            Data::Q(_) => return None,
        })
    }

    /// Picks the elements at `idx`, or `fill` where `idx` is `None` (not for quantized data).
    pub fn take_or(&self, idx: &[Option<usize>], fill: &Data) -> Option<Data> {
        Some(match (self, fill) {
            (Data::F(v), Data::F(f)) => {
                Data::F(idx.iter().map(|i| i.map_or(f[0], |i| v[i])).collect())
            }
            (Data::I(v), Data::I(f)) => {
                Data::I(idx.iter().map(|i| i.map_or(f[0], |i| v[i])).collect())
            }
            (Data::B(v), Data::B(f)) => {
                Data::B(idx.iter().map(|i| i.map_or(f[0], |i| v[i])).collect())
            }
            _ => return None,
        })
    }

    /// Number of elements (bytes for quantized data).
    pub fn len(&self) -> usize {
        match self {
            Data::F(v) => v.len(),
            Data::I(v) => v.len(),
            Data::B(v) => v.len(),
            Data::Q(v) => v.len(),
        }
    }
}

impl Value {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        prod(&self.shape)
    }

    /// A value from an environment or constant tensor.
    pub fn from_tensor(t: &Tensor) -> Value {
        let data = match t.storage() {
            Storage::F32(v) => Data::F(v.iter().map(|&x| f64::from(x)).collect()),
            Storage::F16(v) => Data::F(v.iter().map(|&x| x.to_f64()).collect()),
            Storage::BF16(v) => Data::F(v.iter().map(|&x| x.to_f64()).collect()),
            Storage::F64(v) => Data::F(v.clone()),
            Storage::I8(v) => Data::I(v.iter().map(|&x| x.into()).collect()),
            Storage::I16(v) => Data::I(v.iter().map(|&x| x.into()).collect()),
            Storage::I32(v) => Data::I(v.iter().map(|&x| x.into()).collect()),
            Storage::I64(v) => Data::I(v.clone()),
            Storage::U8(v) => Data::I(v.iter().map(|&x| x.into()).collect()),
            Storage::U32(v) => Data::I(v.iter().map(|&x| x.into()).collect()),
            Storage::Bool(v) => Data::B(v.clone()),
            Storage::Quant(_, b) => Data::Q(b.clone()),
        };
        Value {
            dtype: t.dtype(),
            shape: t.shape().to_vec(),
            data,
        }
    }

    /// Converts back to a tensor (every element is already representable in the dtype).
    pub fn into_tensor(self, ctx: &Ctx) -> Result<Tensor, EvalError> {
        let storage = match (self.dtype, self.data) {
            (DType::F32, Data::F(v)) => Storage::F32(v.into_iter().map(|x| x as f32).collect()),
            (DType::F16, Data::F(v)) => Storage::F16(v.into_iter().map(f16::from_f64).collect()),
            (DType::BF16, Data::F(v)) => Storage::BF16(v.into_iter().map(bf16::from_f64).collect()),
            (DType::F64, Data::F(v)) => Storage::F64(v),
            (DType::I8, Data::I(v)) => Storage::I8(v.into_iter().map(|x| x as i8).collect()),
            (DType::I16, Data::I(v)) => Storage::I16(v.into_iter().map(|x| x as i16).collect()),
            (DType::I32, Data::I(v)) => Storage::I32(v.into_iter().map(|x| x as i32).collect()),
            (DType::I64, Data::I(v)) => Storage::I64(v),
            (DType::U8, Data::I(v)) => Storage::U8(v.into_iter().map(|x| x as u8).collect()),
            (DType::U32, Data::I(v)) => Storage::U32(v.into_iter().map(|x| x as u32).collect()),
            (DType::Bool, Data::B(v)) => Storage::Bool(v),
            (DType::Quant(q), Data::Q(b)) => Storage::Quant(q, b),
            (d, _) => return Err(ctx.internal(format!("{d} value with mismatched data"))),
        };
        Tensor::new(self.shape, storage).map_err(|e| ctx.internal(e.to_string()))
    }

    /// The elements as f64, dequantizing block-quantized data (for cast and matmul).
    pub fn float_values(&self, ctx: &Ctx) -> Result<Vec<f64>, EvalError> {
        match &self.data {
            Data::F(v) => Ok(v.clone()),
            Data::I(v) => Ok(v.iter().map(|&x| x as f64).collect()),
            Data::B(v) => Ok(v.iter().map(|&x| f64::from(u8::from(x))).collect()),
            Data::Q(b) => {
                let q = self
                    .dtype
                    .quant()
                    .ok_or_else(|| ctx.internal("raw blocks without a quantized dtype"))?;
                dequantize(ctx, q, b, self.numel())
            }
        }
    }
}

/// Dequantizes whole blocks to f64, checking the element count.
pub(crate) fn dequantize(
    ctx: &Ctx,
    q: QuantType,
    bytes: &[u8],
    numel: usize,
) -> Result<Vec<f64>, EvalError> {
    let v = quant::dequantize_to_vec(q, bytes).map_err(|source| EvalError::Quant {
        node: ctx.node,
        op: ctx.op.clone(),
        source,
    })?;
    if v.len() != numel {
        return Err(ctx.internal(format!(
            "dequantizing {} bytes of {q} gave {} elements, expected {numel}",
            bytes.len(),
            v.len()
        )));
    }
    Ok(v.into_iter().map(f64::from).collect())
}

/// The product of `dims`, saturating. Exact wherever it is used: a shape (or part of one)
/// either contains a 0, which makes the product 0 whatever the order, or has at most as many
/// elements as a value that passed the element limit.
pub(crate) fn prod(dims: &[usize]) -> usize {
    dims.iter().fold(1usize, |a, &d| a.saturating_mul(d))
}

/// Row-major strides of `shape` (saturating, see [`prod`]).
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1].saturating_mul(shape[i + 1]);
    }
    s
}

/// Calls `f(index, flat)` for every multi-index of `shape` in row-major order.
pub(crate) fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize], usize)) {
    let numel = prod(shape);
    let mut idx = vec![0usize; shape.len()];
    for flat in 0..numel {
        f(&idx, flat);
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// Like [`for_each_index`], stopping at the first error.
pub(crate) fn try_for_each_index<E>(
    shape: &[usize],
    mut f: impl FnMut(&[usize], usize) -> Result<(), E>,
) -> Result<(), E> {
    let numel = prod(shape);
    let mut idx = vec![0usize; shape.len()];
    for flat in 0..numel {
        f(&idx, flat)?;
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(())
}
