//! Element types and scalar values.

use crate::quant::QuantType;
use std::fmt;

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// IEEE 754 binary32.
    F32,
    /// IEEE 754 binary16.
    F16,
    /// bfloat16 (the upper half of an f32).
    BF16,
    /// IEEE 754 binary64.
    F64,
    /// Signed 8-bit integer.
    I8,
    /// Signed 16-bit integer.
    I16,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 8-bit integer.
    U8,
    /// Unsigned 32-bit integer.
    U32,
    /// Boolean (one byte per element in memory).
    Bool,
    /// A GGUF block-quantized type (blocks run along the last axis).
    Quant(QuantType),
}

impl DType {
    /// Every dtype that is not block-quantized.
    pub const PLAIN: [DType; 11] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F64,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::U32,
        DType::Bool,
    ];

    /// f32, f16, bf16 or f64.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
    }

    /// A signed or unsigned integer type.
    pub fn is_int(self) -> bool {
        matches!(
            self,
            DType::I8 | DType::I16 | DType::I32 | DType::I64 | DType::U8 | DType::U32
        )
    }

    /// A signed integer type.
    pub fn is_signed_int(self) -> bool {
        matches!(self, DType::I8 | DType::I16 | DType::I32 | DType::I64)
    }

    /// The boolean type.
    pub fn is_bool(self) -> bool {
        self == DType::Bool
    }

    /// A block-quantized type.
    pub fn is_quantized(self) -> bool {
        matches!(self, DType::Quant(_))
    }

    /// The block-quantized type, if this is one.
    pub fn quant(self) -> Option<QuantType> {
        match self {
            DType::Quant(q) => Some(q),
            _ => None,
        }
    }

    /// Bytes per element, or `None` for block-quantized types (see [`QuantType::block_bytes`]).
    pub fn size_bytes(self) -> Option<usize> {
        Some(match self {
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::F64 | DType::I64 => 8,
            DType::I8 | DType::U8 | DType::Bool => 1,
            DType::Quant(_) => return None,
        })
    }

    /// Bytes needed for `elements` values, or `None` if a quantized tensor's element count is
    /// not a whole number of blocks.
    pub fn bytes_for(self, elements: usize) -> Option<usize> {
        match self {
            DType::Quant(q) => q.bytes_for(elements),
            d => d.size_bytes().and_then(|s| s.checked_mul(elements)),
        }
    }

    /// The (inclusive) range of an integer type, as i64; u32's upper bound fits.
    pub fn int_range(self) -> Option<(i64, i64)> {
        Some(match self {
            DType::I8 => (i8::MIN.into(), i8::MAX.into()),
            DType::I16 => (i16::MIN.into(), i16::MAX.into()),
            DType::I32 => (i32::MIN.into(), i32::MAX.into()),
            DType::I64 => (i64::MIN, i64::MAX),
            DType::U8 => (0, u8::MAX.into()),
            DType::U32 => (0, u32::MAX.into()),
            _ => return None,
        })
    }

    /// The name used in the text format: `f32`, `bf16`, `i64`, `bool`, `q4_k`, ...
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F64 => "f64",
            DType::I8 => "i8",
            DType::I16 => "i16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
            DType::U32 => "u32",
            DType::Bool => "bool",
            DType::Quant(q) => q.name(),
        }
    }

    /// Parses a name printed by [`DType::name`].
    pub fn from_name(name: &str) -> Option<DType> {
        DType::PLAIN
            .into_iter()
            .find(|d| d.name() == name)
            .or_else(|| QuantType::from_name(name).map(DType::Quant))
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scalar value: the fill value of `full` and `pad`, or an element of a constant.
///
/// Floats compare by bit pattern, so a graph holding a NaN constant still equals itself.
#[derive(Clone, Copy, Debug)]
pub enum Scalar {
    /// A floating-point value.
    Float(f64),
    /// An integer value (covers every integer dtype, u32 included).
    Int(i64),
    /// A boolean.
    Bool(bool),
}

impl Scalar {
    /// The value as f64 (integers converted, booleans 0 or 1).
    pub fn to_f64(self) -> f64 {
        match self {
            Scalar::Float(v) => v,
            Scalar::Int(v) => v as f64,
            Scalar::Bool(b) => f64::from(u8::from(b)),
        }
    }

    /// True if this value can be stored in `dtype` without a silent change of kind: floats
    /// for float types, in-range integers for integer types (integers are also accepted for
    /// float types), booleans for bool.
    pub fn fits(self, dtype: DType) -> bool {
        match (self, dtype) {
            (Scalar::Float(_), d) => d.is_float(),
            (Scalar::Int(v), d) if d.is_int() => {
                let (lo, hi) = d.int_range().unwrap_or((i64::MIN, i64::MAX));
                (lo..=hi).contains(&v)
            }
            (Scalar::Int(_), d) => d.is_float(),
            (Scalar::Bool(_), d) => d == DType::Bool,
        }
    }
}

impl PartialEq for Scalar {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Scalar::Float(a), Scalar::Float(b)) => a.to_bits() == b.to_bits(),
            (Scalar::Int(a), Scalar::Int(b)) => a == b,
            (Scalar::Bool(a), Scalar::Bool(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Scalar {}

impl std::hash::Hash for Scalar {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            Scalar::Float(v) => (0u8, v.to_bits()).hash(state),
            Scalar::Int(v) => (1u8, v).hash(state),
            Scalar::Bool(v) => (2u8, v).hash(state),
        }
    }
}

impl fmt::Display for Scalar {
    /// Floats always show a `.`, an exponent, `nan` or `inf`, so they read back as floats.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Float(v) if v.is_nan() => f.write_str("nan"),
            Scalar::Float(v) if v.is_infinite() => {
                f.write_str(if *v > 0.0 { "inf" } else { "-inf" })
            }
            Scalar::Float(v) => write!(f, "{v:?}"),
            Scalar::Int(v) => write!(f, "{v}"),
            Scalar::Bool(v) => write!(f, "{v}"),
        }
    }
}

impl std::str::FromStr for Scalar {
    type Err = String;
    fn from_str(s: &str) -> Result<Scalar, String> {
        match s {
            "true" => return Ok(Scalar::Bool(true)),
            "false" => return Ok(Scalar::Bool(false)),
            "nan" => return Ok(Scalar::Float(f64::NAN)),
            "inf" => return Ok(Scalar::Float(f64::INFINITY)),
            "-inf" => return Ok(Scalar::Float(f64::NEG_INFINITY)),
            _ => {}
        }
        let looks_float = s.contains(['.', 'e', 'E']);
        if looks_float {
            s.parse::<f64>()
                .map(Scalar::Float)
                .map_err(|_| format!("`{s}` is not a number"))
        } else {
            s.parse::<i64>()
                .map(Scalar::Int)
                .map_err(|_| format!("`{s}` is not a number, `true`, `false`, `nan` or `inf`"))
        }
    }
}
