//! Operator overloading: `&a + &b`, `a * 2.0`, `-x`, for owned and borrowed tensors.

use super::elementwise::IntoOperand;
use super::Tensor;
use kiln_ir::BinaryOp;
use std::panic::Location;

macro_rules! binop {
    ($tr:ident $f:ident $op:ident) => {
        impl<R: IntoOperand> std::ops::$tr<R> for &Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $f(self, rhs: R) -> Tensor {
                self.binary(BinaryOp::$op, rhs, Location::caller())
            }
        }
        impl<R: IntoOperand> std::ops::$tr<R> for Tensor {
            type Output = Tensor;
            #[track_caller]
            fn $f(self, rhs: R) -> Tensor {
                self.binary(BinaryOp::$op, rhs, Location::caller())
            }
        }
    };
}

binop!(Add add Add);
binop!(Sub sub Sub);
binop!(Mul mul Mul);
binop!(Div div Div);
binop!(Rem rem Mod);

impl std::ops::Neg for &Tensor {
    type Output = Tensor;
    #[track_caller]
    fn neg(self) -> Tensor {
        Tensor::neg(self)
    }
}

impl std::ops::Neg for Tensor {
    type Output = Tensor;
    #[track_caller]
    fn neg(self) -> Tensor {
        Tensor::neg(&self)
    }
}

/// `2.0 - x`, `1.0 / x`: a scalar on the left, of a borrowed or an owned tensor.
macro_rules! scalar_lhs {
    ($($t:ty),*) => {$(
        impl std::ops::Add<&Tensor> for $t {
            type Output = Tensor;
            #[track_caller]
            fn add(self, rhs: &Tensor) -> Tensor {
                rhs.binary(BinaryOp::Add, self, Location::caller())
            }
        }
        impl std::ops::Mul<&Tensor> for $t {
            type Output = Tensor;
            #[track_caller]
            fn mul(self, rhs: &Tensor) -> Tensor {
                rhs.binary(BinaryOp::Mul, self, Location::caller())
            }
        }
        impl std::ops::Sub<&Tensor> for $t {
            type Output = Tensor;
            #[track_caller]
            fn sub(self, rhs: &Tensor) -> Tensor {
                let loc = Location::caller();
                rhs.neg().binary(BinaryOp::Add, self, loc)
            }
        }
        impl std::ops::Div<&Tensor> for $t {
            type Output = Tensor;
            #[track_caller]
            fn div(self, rhs: &Tensor) -> Tensor {
                let loc = Location::caller();
                rhs.full_like(self).binary(BinaryOp::Div, rhs, loc)
            }
        }
        scalar_lhs_owned!($t: Add add, Mul mul, Sub sub, Div div);
    )*};
}

/// The same for an owned tensor (`1.0 - x.sigmoid()`), by reference.
macro_rules! scalar_lhs_owned {
    ($t:ty: $($tr:ident $f:ident),*) => {$(
        impl std::ops::$tr<Tensor> for $t {
            type Output = Tensor;
            #[track_caller]
            fn $f(self, rhs: Tensor) -> Tensor {
                std::ops::$tr::$f(self, &rhs)
            }
        }
    )*};
}

scalar_lhs!(f64, f32, i64, i32);
