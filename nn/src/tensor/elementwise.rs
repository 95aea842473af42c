//! Elementwise methods: arithmetic, comparisons, logic, math functions, casts, `where`.

use super::axes::Scalarish;
use super::Tensor;
use kiln_ir::{BinaryOp, DType, NodeId, UnaryOp};
use std::panic::Location;

/// The right-hand side of an elementwise op: another tensor or a Rust scalar.
pub trait IntoOperand {
    /// The operand's dtype if it is a tensor.
    fn dtype_hint(&self) -> Option<DType>;

    /// The operand's node in `lhs`'s trace (a scalar becomes a rank-0 constant of `dtype`);
    /// `None` after recording an error.
    fn operand_as(self, lhs: &Tensor, dtype: DType, loc: &Location<'_>) -> Option<NodeId>;

    /// The operand's node, a scalar taking `lhs`'s dtype.
    fn operand(self, lhs: &Tensor, loc: &Location<'_>) -> Option<NodeId>
    where
        Self: Sized,
    {
        self.operand_as(lhs, lhs.dtype(), loc)
    }
}

impl IntoOperand for &Tensor {
    fn dtype_hint(&self) -> Option<DType> {
        Some(self.dtype())
    }
    fn operand_as(self, lhs: &Tensor, _: DType, loc: &Location<'_>) -> Option<NodeId> {
        lhs.same_trace(self, loc)
    }
}

impl IntoOperand for Tensor {
    fn dtype_hint(&self) -> Option<DType> {
        Some(self.dtype())
    }
    fn operand_as(self, lhs: &Tensor, _: DType, loc: &Location<'_>) -> Option<NodeId> {
        lhs.same_trace(&self, loc)
    }
}

impl<S: Scalarish> IntoOperand for S {
    fn dtype_hint(&self) -> Option<DType> {
        None
    }
    fn operand_as(self, lhs: &Tensor, dtype: DType, loc: &Location<'_>) -> Option<NodeId> {
        let t = lhs.build(loc, |g| g.scalar(self.to_scalar(dtype), dtype));
        (!lhs.tracer.has_error()).then_some(t.id)
    }
}

macro_rules! unary {
    ($($(#[$doc:meta])* $f:ident => $op:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[track_caller]
        pub fn $f(&self) -> Tensor {
            self.unary(UnaryOp::$op, Location::caller())
        }
    )*};
}

macro_rules! binary {
    ($($(#[$doc:meta])* $f:ident => $op:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[track_caller]
        pub fn $f(&self, rhs: impl IntoOperand) -> Tensor {
            self.binary(BinaryOp::$op, rhs, Location::caller())
        }
    )*};
}

impl Tensor {
    pub(crate) fn unary(&self, op: UnaryOp, loc: &Location<'_>) -> Tensor {
        self.build(loc, |g| g.unary(op, self.id))
    }

    pub(crate) fn binary(&self, op: BinaryOp, rhs: impl IntoOperand, loc: &Location<'_>) -> Tensor {
        match rhs.operand(self, loc) {
            Some(r) => self.build(loc, |g| g.binary(op, self.id, r)),
            None => self.tracer.placeholder(),
        }
    }

    unary!(
        /// `-x`.
        neg => Neg,
        /// `|x|`.
        abs => Abs,
        /// `e^x`.
        exp => Exp,
        /// Natural logarithm.
        log => Log,
        /// Square root.
        sqrt => Sqrt,
        /// `1 / sqrt(x)`.
        rsqrt => Rsqrt,
        /// `1 / x`.
        reciprocal => Recip,
        /// Sine.
        sin => Sin,
        /// Cosine.
        cos => Cos,
        /// Hyperbolic tangent.
        tanh => Tanh,
        /// Error function.
        erf => Erf,
        /// Round down.
        floor => Floor,
        /// Round up.
        ceil => Ceil,
        /// Round half to even.
        round => Round,
        /// -1, 0 or 1.
        sign => Sign,
        /// Logical not (bool) or bitwise not (integers).
        logical_not => Not,
    );

    binary!(
        /// `self + rhs` with broadcasting.
        add => Add,
        /// `self - rhs` with broadcasting.
        sub => Sub,
        /// `self * rhs` with broadcasting.
        mul => Mul,
        /// `self / rhs` with broadcasting (floor division for integers).
        div => Div,
        /// `self ^ rhs` (floats).
        pow => Pow,
        /// Elementwise maximum (`torch.maximum`).
        maximum => Max,
        /// Elementwise minimum (`torch.minimum`).
        minimum => Min,
        /// Floor modulo (`torch.remainder`).
        remainder => Mod,
        /// `self == rhs` (bool).
        eq => Eq,
        /// `self != rhs` (bool).
        ne => Ne,
        /// `self < rhs` (bool).
        lt => Lt,
        /// `self <= rhs` (bool).
        le => Le,
        /// `self > rhs` (bool).
        gt => Gt,
        /// `self >= rhs` (bool).
        ge => Ge,
        /// Logical (bool) or bitwise (integer) and.
        logical_and => And,
        /// Logical (bool) or bitwise (integer) or.
        logical_or => Or,
        /// Logical (bool) or bitwise (integer) xor.
        logical_xor => Xor,
    );

    /// `x * x`.
    #[track_caller]
    pub fn square(&self) -> Tensor {
        self.binary(BinaryOp::Mul, self, Location::caller())
    }

    /// Converts to `dtype` (a no-op when it already has it).
    #[track_caller]
    pub fn to(&self, dtype: DType) -> Tensor {
        if self.dtype() == dtype {
            return self.clone();
        }
        self.build(Location::caller(), |g| g.cast(self.id, dtype))
    }

    /// `torch.where(cond, a, b)`: `a` where `cond` is true, else `b` (broadcast).
    #[track_caller]
    pub fn where_(cond: &Tensor, a: impl IntoOperand, b: impl IntoOperand) -> Tensor {
        let loc = Location::caller();
        // A scalar takes the dtype of the other value operand (f32 if both are scalars).
        let dtype = a.dtype_hint().or(b.dtype_hint()).unwrap_or(DType::F32);
        let (a, b) = (
            a.operand_as(cond, dtype, loc),
            b.operand_as(cond, dtype, loc),
        );
        match (a, b) {
            (Some(a), Some(b)) => cond.build(loc, |g| g.where_(cond.id, a, b)),
            _ => cond.tracer.placeholder(),
        }
    }

    /// `self` where `mask` is true is replaced by `value` (`torch.masked_fill`).
    #[track_caller]
    pub fn masked_fill(&self, mask: &Tensor, value: impl Scalarish) -> Tensor {
        let loc = Location::caller();
        let v = value.operand(self, loc);
        let m = self.same_trace(mask, loc);
        match (v, m) {
            (Some(v), Some(m)) => self.build(loc, |g| g.where_(m, v, self.id)),
            _ => self.tracer.placeholder(),
        }
    }

    /// Clamps into `[min, max]`.
    #[track_caller]
    pub fn clamp(&self, min: impl Scalarish, max: impl Scalarish) -> Tensor {
        let loc = Location::caller();
        self.binary(BinaryOp::Max, min, loc)
            .binary(BinaryOp::Min, max, loc)
    }
}
