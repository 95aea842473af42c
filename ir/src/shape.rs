//! Shapes (lists of symbolic dims) and tensor types.

use crate::dim::Dim;
use crate::dtype::DType;
use std::fmt;

/// A tensor shape: one [`Dim`] per axis, outermost first (row-major). Any rank, 0 included.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    /// A shape from anything that converts to dims: `Shape::new(["batch", "seq"])`,
    /// `Shape::new([2, 3])`.
    pub fn new<D: Into<Dim>>(dims: impl IntoIterator<Item = D>) -> Shape {
        Shape(dims.into_iter().map(Into::into).collect())
    }

    /// The rank-0 shape of a scalar.
    pub fn scalar() -> Shape {
        Shape(Vec::new())
    }

    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The dims.
    pub fn dims(&self) -> &[Dim] {
        &self.0
    }

    /// The number of elements, as a (symbolic) product.
    pub fn numel(&self) -> Dim {
        self.0
            .iter()
            .fold(Dim::constant(1), |acc, d| acc * d.clone())
    }

    /// The constant sizes, if no dim is symbolic.
    pub fn as_consts(&self) -> Option<Vec<i64>> {
        self.0.iter().map(Dim::as_const).collect()
    }
}

impl std::ops::Index<usize> for Shape {
    type Output = Dim;
    fn index(&self, i: usize) -> &Dim {
        &self.0[i]
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The type of a tensor value: element type and shape.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TensorType {
    /// Element type.
    pub dtype: DType,
    /// Shape.
    pub shape: Shape,
}

impl TensorType {
    /// A tensor type.
    pub fn new(dtype: DType, shape: Shape) -> TensorType {
        TensorType { dtype, shape }
    }

    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.shape.rank()
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)
    }
}

impl fmt::Debug for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// NumPy broadcasting of two shapes: align at the right; equal dims stay, a constant 1
/// stretches to the other dim. Symbolic dims broadcast only with an equal dim or a 1 (a
/// symbol is never assumed to be 1). `None` when the shapes do not broadcast.
pub fn broadcast_shapes(a: &Shape, b: &Shape) -> Option<Shape> {
    let rank = a.rank().max(b.rank());
    let one = Dim::constant(1);
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let da = (i + a.rank()).checked_sub(rank).map_or(&one, |j| &a.0[j]);
        let db = (i + b.rank()).checked_sub(rank).map_or(&one, |j| &b.0[j]);
        out.push(if da == db || *db == 1 {
            da.clone()
        } else if *da == 1 {
            db.clone()
        } else {
            return None;
        });
    }
    Some(Shape(out))
}
