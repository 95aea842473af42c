//! Elementwise methods: arithmetic, comparisons, logic, math functions, casts, `where`.

use super::axes::Scalarish;
use super::Tensor;
use kiln_ir::{BinaryOp, DType, NodeId, UnaryOp};
use std::panic::Location;

/// The right-hand side of an elementwise op: another tensor or a Rust scalar.
pub trait IntoOperand {
    /// The operand's dtype if it is a tensor.
    fn dtype_hint(&self) -> Option<DType>;

    /// A scalar's own dtype ([`Scalarish::natural_dtype`]); `None` for a tensor.
    fn scalar_dtype(&self) -> Option<DType> {
        None
    }

    /// The operand's node in `lhs`'s trace (a scalar becomes a rank-0 constant of `dtype`);
    /// `None` after recording an error that names `op`.
    fn operand_as(self, op: &str, lhs: &Tensor, dtype: DType, loc: &Location<'_>)
        -> Option<NodeId>;

    /// The operand's node, a scalar taking `lhs`'s dtype.
    fn operand(self, op: &str, lhs: &Tensor, loc: &Location<'_>) -> Option<NodeId>
    where
        Self: Sized,
    {
        self.operand_as(op, lhs, lhs.dtype(), loc)
    }
}

impl IntoOperand for &Tensor {
    fn dtype_hint(&self) -> Option<DType> {
        Some(self.dtype())
    }
    fn operand_as(self, op: &str, lhs: &Tensor, _: DType, loc: &Location<'_>) -> Option<NodeId> {
        lhs.same_trace(op, self, loc)
    }
}

impl IntoOperand for Tensor {
    fn dtype_hint(&self) -> Option<DType> {
        Some(self.dtype())
    }
    fn operand_as(self, op: &str, lhs: &Tensor, _: DType, loc: &Location<'_>) -> Option<NodeId> {
        lhs.same_trace(op, &self, loc)
    }
}

impl<S: Scalarish> IntoOperand for S {
    fn dtype_hint(&self) -> Option<DType> {
        None
    }
    fn scalar_dtype(&self) -> Option<DType> {
        Some(self.natural_dtype())
    }
    fn operand_as(self, _: &str, lhs: &Tensor, dtype: DType, loc: &Location<'_>) -> Option<NodeId> {
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
        match rhs.operand(op.name(), self, loc) {
            Some(r) => self.build(loc, |g| g.binary(op, self.id, r)),
            None => self.tracer.placeholder(),
        }
    }

    /// `self` as bool: itself if it is bool, else `self != 0` (PyTorch's truth value).
    fn truth(&self, loc: &Location<'_>) -> Tensor {
        if self.dtype().is_bool() {
            self.clone()
        } else {
            self.binary(BinaryOp::Ne, 0i64, loc)
        }
    }

    /// A logical op on the truth values of both operands (a scalar takes `self`'s dtype).
    fn logical(&self, op: BinaryOp, rhs: impl IntoOperand, loc: &Location<'_>) -> Tensor {
        let Some(r) = rhs.operand(op.name(), self, loc) else {
            return self.tracer.placeholder();
        };
        let r = Tensor::from_node(self.tracer.clone(), r).truth(loc);
        self.truth(loc).binary(op, &r, loc)
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
        /// -1, 0 or 1 (NaN stays NaN, where PyTorch gives 0).
        sign => Sign,
        /// Bitwise not (`torch.bitwise_not`): `!x` for integers, logical not for bool.
        bitwise_not => Not,
    );

    binary!(
        /// `self + rhs` with broadcasting.
        add => Add,
        /// `self - rhs` with broadcasting.
        sub => Sub,
        /// `self * rhs` with broadcasting.
        mul => Mul,
        /// `self / rhs` with broadcasting. Integers use floor division, as
        /// `torch.div(a, b, rounding_mode="floor")` (PyTorch's `/` would give floats).
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
        /// Bitwise and of integers or bools (`torch.bitwise_and`, `&`).
        bitwise_and => And,
        /// Bitwise or of integers or bools (`torch.bitwise_or`, `|`).
        bitwise_or => Or,
        /// Bitwise xor of integers or bools (`torch.bitwise_xor`, `^`).
        bitwise_xor => Xor,
    );

    /// `torch.logical_not`: a bool tensor, true where `self` is zero (or false). Any dtype.
    #[track_caller]
    pub fn logical_not(&self) -> Tensor {
        let loc = Location::caller();
        self.truth(loc).unary(UnaryOp::Not, loc)
    }

    /// `torch.logical_and`: a bool tensor, true where both operands are nonzero.
    #[track_caller]
    pub fn logical_and(&self, rhs: impl IntoOperand) -> Tensor {
        self.logical(BinaryOp::And, rhs, Location::caller())
    }

    /// `torch.logical_or`: a bool tensor, true where either operand is nonzero.
    #[track_caller]
    pub fn logical_or(&self, rhs: impl IntoOperand) -> Tensor {
        self.logical(BinaryOp::Or, rhs, Location::caller())
    }

    /// `torch.logical_xor`: a bool tensor, true where exactly one operand is nonzero.
    #[track_caller]
    pub fn logical_xor(&self, rhs: impl IntoOperand) -> Tensor {
        self.logical(BinaryOp::Xor, rhs, Location::caller())
    }

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

    /// Converts to `other`'s dtype (`torch.Tensor.type_as`).
    #[track_caller]
    pub fn type_as(&self, other: &Tensor) -> Tensor {
        self.to(other.dtype())
    }

    /// `torch.where(cond, a, b)`: `a` where `cond` is true, else `b` (broadcast). A scalar
    /// takes the other value's dtype; of two scalars the result is bool, i64 or f32 as in
    /// PyTorch (`where(c, 1, 0)` is i64, `where(c, 1, 0.5)` f32).
    #[track_caller]
    pub fn where_(cond: &Tensor, a: impl IntoOperand, b: impl IntoOperand) -> Tensor {
        let loc = Location::caller();
        // A scalar takes the dtype of the other value operand. Two scalars promote as
        // PyTorch's Python scalars do: bool < i64 < f32 (`where(c, 1, 0)` is i64).
        let order = |d: Option<DType>| match d {
            Some(DType::Bool) => 0,
            Some(DType::I64) => 1,
            _ => 2,
        };
        let (sa, sb) = (a.scalar_dtype(), b.scalar_dtype());
        let both = if order(sa) >= order(sb) { sa } else { sb };
        let dtype = a
            .dtype_hint()
            .or(b.dtype_hint())
            .unwrap_or(both.unwrap_or(DType::F32));
        let (a, b) = (
            a.operand_as("where", cond, dtype, loc),
            b.operand_as("where", cond, dtype, loc),
        );
        match (a, b) {
            (Some(a), Some(b)) => cond.build(loc, |g| g.where_(cond.id, a, b)),
            _ => cond.tracer.placeholder(),
        }
    }

    /// `self` where `mask` is true is replaced by `value` (`torch.masked_fill`). `self` and
    /// the bool `mask` broadcast against each other, so the result may be larger than `self`
    /// (PyTorch refuses that; an additive attention mask merged with a padding mask relies
    /// on it).
    #[track_caller]
    pub fn masked_fill(&self, mask: &Tensor, value: impl Scalarish) -> Tensor {
        let loc = Location::caller();
        let Some(m) = self.same_trace("masked_fill", mask, loc) else {
            return self.tracer.placeholder();
        };
        match value.operand("masked_fill", self, loc) {
            Some(v) => self.build(loc, |g| g.where_(m, v, self.id)),
            None => self.tracer.placeholder(),
        }
    }

    /// Clamps into `[min, max]` (`torch.clamp`): `min(max(x, min), max)`, so every value is
    /// `max` when `min > max`; NaN stays NaN.
    #[track_caller]
    pub fn clamp(&self, min: impl Scalarish, max: impl Scalarish) -> Tensor {
        let loc = Location::caller();
        self.binary(BinaryOp::Max, min, loc)
            .binary(BinaryOp::Min, max, loc)
    }

    /// Clamps from below only (`torch.clamp_min`, `x.clamp(min=v)`).
    #[track_caller]
    pub fn clamp_min(&self, min: impl Scalarish) -> Tensor {
        self.binary(BinaryOp::Max, min, Location::caller())
    }

    /// Clamps from above only (`torch.clamp_max`, `x.clamp(max=v)`).
    #[track_caller]
    pub fn clamp_max(&self, max: impl Scalarish) -> Tensor {
        self.binary(BinaryOp::Min, max, Location::caller())
    }
}
