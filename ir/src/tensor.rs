//! Concrete tensors: the values the reference interpreter consumes and produces, and the data
//! of dense constants.

use crate::dtype::DType;
use crate::quant::{self, QuantType};
use half::{bf16, f16};
use std::fmt;

/// The elements of a tensor, row-major.
#[derive(Clone, Debug)]
pub enum Storage {
    /// f32 elements.
    F32(Vec<f32>),
    /// f16 elements.
    F16(Vec<f16>),
    /// bf16 elements.
    BF16(Vec<bf16>),
    /// f64 elements.
    F64(Vec<f64>),
    /// i8 elements.
    I8(Vec<i8>),
    /// i16 elements.
    I16(Vec<i16>),
    /// i32 elements.
    I32(Vec<i32>),
    /// i64 elements.
    I64(Vec<i64>),
    /// u8 elements.
    U8(Vec<u8>),
    /// u32 elements.
    U32(Vec<u32>),
    /// bool elements.
    Bool(Vec<bool>),
    /// Raw GGUF blocks of a block-quantized type.
    Quant(QuantType, Vec<u8>),
}

/// A tensor with a concrete shape.
#[derive(Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    storage: Storage,
}

/// Why a tensor could not be made or read.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TensorError {
    /// The data does not have as many elements (or bytes) as the shape needs.
    #[error("shape {shape:?} of dtype {dtype} needs {expected} {unit}, the data has {actual}")]
    Length {
        /// The shape.
        shape: Vec<usize>,
        /// The dtype.
        dtype: DType,
        /// Elements (or bytes, for quantized types) the shape needs.
        expected: usize,
        /// Elements (or bytes) given.
        actual: usize,
        /// `elements` or `bytes`.
        unit: &'static str,
    },
    /// A quantized tensor whose last axis is not a whole number of blocks.
    #[error("a {qtype} tensor's last axis must be a multiple of {block}, shape is {shape:?}")]
    Blocks {
        /// The quantized type.
        qtype: QuantType,
        /// Its block size.
        block: usize,
        /// The shape.
        shape: Vec<usize>,
    },
    /// Dequantization failed.
    #[error(transparent)]
    Quant(#[from] quant::QuantError),
    /// A read asked for the wrong kind of element.
    #[error("tensor of dtype {actual} read as {expected}")]
    Kind {
        /// What the caller asked for.
        expected: &'static str,
        /// The tensor's dtype.
        actual: DType,
    },
}

/// Rust element types that map one-to-one to a [`DType`].
pub trait Element: Copy + 'static {
    /// The dtype of this element type.
    const DTYPE: DType;
    /// Wraps a vector into storage.
    fn into_storage(v: Vec<Self>) -> Storage;
    /// Borrows the elements if the storage holds this type.
    fn slice(s: &Storage) -> Option<&[Self]>;
}

macro_rules! elements {
    ($($t:ty => $variant:ident),* $(,)?) => {$(
        impl Element for $t {
            const DTYPE: DType = DType::$variant;
            fn into_storage(v: Vec<Self>) -> Storage {
                Storage::$variant(v)
            }
            fn slice(s: &Storage) -> Option<&[Self]> {
                match s {
                    Storage::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    )*};
}
elements!(f32 => F32, f16 => F16, bf16 => BF16, f64 => F64, i8 => I8, i16 => I16, i32 => I32,
          i64 => I64, u8 => U8, u32 => U32, bool => Bool);

/// Applies `$body` to the vector inside every non-quantized storage variant.
macro_rules! with_plain {
    ($s:expr, $v:ident => $body:expr, quant $q:pat => $qbody:expr) => {
        match $s {
            Storage::F32($v) => $body,
            Storage::F16($v) => $body,
            Storage::BF16($v) => $body,
            Storage::F64($v) => $body,
            Storage::I8($v) => $body,
            Storage::I16($v) => $body,
            Storage::I32($v) => $body,
            Storage::I64($v) => $body,
            Storage::U8($v) => $body,
            Storage::U32($v) => $body,
            Storage::Bool($v) => $body,
            $q => $qbody,
        }
    };
}

impl Storage {
    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        match self {
            Storage::F32(_) => DType::F32,
            Storage::F16(_) => DType::F16,
            Storage::BF16(_) => DType::BF16,
            Storage::F64(_) => DType::F64,
            Storage::I8(_) => DType::I8,
            Storage::I16(_) => DType::I16,
            Storage::I32(_) => DType::I32,
            Storage::I64(_) => DType::I64,
            Storage::U8(_) => DType::U8,
            Storage::U32(_) => DType::U32,
            Storage::Bool(_) => DType::Bool,
            Storage::Quant(q, _) => DType::Quant(*q),
        }
    }

    /// Number of elements (bytes for quantized storage).
    fn len(&self) -> usize {
        with_plain!(self, v => v.len(), quant Storage::Quant(_, b) => b.len())
    }
}

impl Tensor {
    /// A tensor from a shape and storage; checks that the sizes agree.
    pub fn new(shape: Vec<usize>, storage: Storage) -> Result<Tensor, TensorError> {
        let numel = shape.iter().product::<usize>();
        let dtype = storage.dtype();
        let (expected, unit) = match dtype {
            DType::Quant(q) => {
                let last = shape.last().copied().unwrap_or(1);
                if last % q.block_size() != 0 {
                    return Err(TensorError::Blocks {
                        qtype: q,
                        block: q.block_size(),
                        shape,
                    });
                }
                (numel / q.block_size() * q.block_bytes(), "bytes")
            }
            _ => (numel, "elements"),
        };
        if storage.len() != expected {
            return Err(TensorError::Length {
                shape,
                dtype,
                expected,
                actual: storage.len(),
                unit,
            });
        }
        Ok(Tensor { shape, storage })
    }

    /// A tensor from a vector of elements.
    pub fn from_vec<T: Element>(shape: Vec<usize>, data: Vec<T>) -> Result<Tensor, TensorError> {
        Tensor::new(shape, T::into_storage(data))
    }

    /// A rank-0 tensor.
    pub fn scalar<T: Element>(value: T) -> Tensor {
        Tensor {
            shape: Vec::new(),
            storage: T::into_storage(vec![value]),
        }
    }

    /// A tensor of raw GGUF blocks.
    pub fn quantized(
        qtype: QuantType,
        shape: Vec<usize>,
        bytes: Vec<u8>,
    ) -> Result<Tensor, TensorError> {
        Tensor::new(shape, Storage::Quant(qtype, bytes))
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The dtype.
    pub fn dtype(&self) -> DType {
        self.storage.dtype()
    }

    /// The storage.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Borrows the elements as `T`, if the dtype is `T`'s.
    pub fn as_slice<T: Element>(&self) -> Result<&[T], TensorError> {
        T::slice(&self.storage).ok_or(TensorError::Kind {
            expected: T::DTYPE.name(),
            actual: self.dtype(),
        })
    }

    /// Every element as f64 (integers converted, booleans 0/1, quantized blocks dequantized).
    pub fn to_f64_vec(&self) -> Result<Vec<f64>, TensorError> {
        Ok(match &self.storage {
            Storage::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Storage::F16(v) => v.iter().map(|&x| x.to_f64()).collect(),
            Storage::BF16(v) => v.iter().map(|&x| x.to_f64()).collect(),
            Storage::F64(v) => v.clone(),
            Storage::I8(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Storage::I16(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Storage::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Storage::I64(v) => v.iter().map(|&x| x as f64).collect(),
            Storage::U8(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Storage::U32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Storage::Bool(v) => v.iter().map(|&x| f64::from(u8::from(x))).collect(),
            Storage::Quant(q, bytes) => quant::dequantize_to_vec(*q, bytes)?
                .into_iter()
                .map(f64::from)
                .collect(),
        })
    }

    /// Every element of an integer or bool tensor as i64.
    pub fn to_i64_vec(&self) -> Result<Vec<i64>, TensorError> {
        Ok(match &self.storage {
            Storage::I8(v) => v.iter().map(|&x| x.into()).collect(),
            Storage::I16(v) => v.iter().map(|&x| x.into()).collect(),
            Storage::I32(v) => v.iter().map(|&x| x.into()).collect(),
            Storage::I64(v) => v.clone(),
            Storage::U8(v) => v.iter().map(|&x| x.into()).collect(),
            Storage::U32(v) => v.iter().map(|&x| x.into()).collect(),
            Storage::Bool(v) => v.iter().map(|&x| x.into()).collect(),
            _ => {
                return Err(TensorError::Kind {
                    expected: "an integer type",
                    actual: self.dtype(),
                })
            }
        })
    }
}

impl PartialEq for Tensor {
    /// Same shape, dtype and bit patterns (so NaN equals NaN, and 0.0 differs from -0.0).
    fn eq(&self, other: &Tensor) -> bool {
        fn bits<T: Copy, B: PartialEq>(a: &[T], b: &[T], f: impl Fn(T) -> B) -> bool {
            a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| f(x) == f(y))
        }
        self.shape == other.shape
            && match (&self.storage, &other.storage) {
                (Storage::F32(a), Storage::F32(b)) => bits(a, b, f32::to_bits),
                (Storage::F16(a), Storage::F16(b)) => bits(a, b, f16::to_bits),
                (Storage::BF16(a), Storage::BF16(b)) => bits(a, b, bf16::to_bits),
                (Storage::F64(a), Storage::F64(b)) => bits(a, b, f64::to_bits),
                (Storage::I8(a), Storage::I8(b)) => a == b,
                (Storage::I16(a), Storage::I16(b)) => a == b,
                (Storage::I32(a), Storage::I32(b)) => a == b,
                (Storage::I64(a), Storage::I64(b)) => a == b,
                (Storage::U8(a), Storage::U8(b)) => a == b,
                (Storage::U32(a), Storage::U32(b)) => a == b,
                (Storage::Bool(a), Storage::Bool(b)) => a == b,
                (Storage::Quant(qa, a), Storage::Quant(qb, b)) => qa == qb && a == b,
                _ => false,
            }
    }
}

impl Eq for Tensor {}

impl std::hash::Hash for Tensor {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.shape.hash(state);
        self.dtype().hash(state);
        // Hash the shape, dtype and data length only: equal tensors hash equal, which is all
        // `Hash` requires, and large constants stay cheap to hash.
        self.storage.len().hash(state);
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({}{:?}, ", self.dtype(), self.shape)?;
        with_plain!(&self.storage, v => write!(f, "{v:?})"),
                    quant Storage::Quant(_, b) => write!(f, "{} bytes)", b.len()))
    }
}
