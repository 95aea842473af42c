//! Argument conversions: lists of axes and scalar operands.

use kiln_ir::{DType, Scalar};

/// One axis or several, each possibly negative: `-1`, `[0, 2]`, `&[1, -1][..]`, `vec![0]`.
pub trait AxisList {
    /// The axes as given.
    fn to_axes(&self) -> Vec<isize>;
}

impl AxisList for isize {
    fn to_axes(&self) -> Vec<isize> {
        vec![*self]
    }
}

impl<const N: usize> AxisList for [isize; N] {
    fn to_axes(&self) -> Vec<isize> {
        self.to_vec()
    }
}

impl AxisList for &[isize] {
    fn to_axes(&self) -> Vec<isize> {
        self.to_vec()
    }
}

impl AxisList for Vec<isize> {
    fn to_axes(&self) -> Vec<isize> {
        self.clone()
    }
}

/// A Rust number or bool used as a tensor operand (`x * 0.5`, `x + 1`); it takes the other
/// operand's dtype.
pub trait Scalarish: Copy {
    /// The value as an IR scalar suitable for `dtype`.
    fn to_scalar(self, dtype: DType) -> Scalar;

    /// The dtype PyTorch gives such a scalar when no tensor decides (`torch.where(c, 1, 0)`
    /// is i64): f32 for floats, i64 for integers, bool for bools.
    fn natural_dtype(self) -> DType {
        DType::F32
    }
}

impl Scalarish for f64 {
    fn to_scalar(self, dtype: DType) -> Scalar {
        if dtype.is_float() {
            Scalar::Float(self)
        } else if dtype.is_bool() {
            Scalar::Bool(self != 0.0)
        } else {
            // Integer tensors: an integral float is used as is; others are rejected by the
            // IR's value check, which names the value and the dtype.
            if self.fract() == 0.0 && self.abs() < 9.0e15 {
                Scalar::Int(self as i64)
            } else {
                Scalar::Float(self)
            }
        }
    }
}

impl Scalarish for f32 {
    fn to_scalar(self, dtype: DType) -> Scalar {
        f64::from(self).to_scalar(dtype)
    }
}

impl Scalarish for i64 {
    fn natural_dtype(self) -> DType {
        DType::I64
    }

    fn to_scalar(self, dtype: DType) -> Scalar {
        if dtype.is_float() {
            Scalar::Float(self as f64)
        } else if dtype.is_bool() {
            Scalar::Bool(self != 0)
        } else {
            Scalar::Int(self)
        }
    }
}

impl Scalarish for i32 {
    fn natural_dtype(self) -> DType {
        DType::I64
    }

    fn to_scalar(self, dtype: DType) -> Scalar {
        i64::from(self).to_scalar(dtype)
    }
}

impl Scalarish for bool {
    fn natural_dtype(self) -> DType {
        DType::Bool
    }

    fn to_scalar(self, dtype: DType) -> Scalar {
        if dtype.is_bool() {
            Scalar::Bool(self)
        } else {
            i64::from(self).to_scalar(dtype)
        }
    }
}
