//! Elementwise ops (unary, binary, where, cast) and the fill-like sources (full, iota).

use super::error::Ctx;
use super::value::{for_each_index, prod, Data, Value};
use super::EvalError;
use crate::dtype::{DType, Scalar};
use crate::numerics::{
    binary_float, binary_int, compare, float_to_int, int_to_float, round_float, unary_rounded,
    wrap_int,
};
use crate::op::{BinaryOp, UnaryOp};

/// An elementwise unary op.
pub(crate) fn unary(ctx: &Ctx, u: UnaryOp, x: &Value) -> Result<Value, EvalError> {
    let d = x.dtype;
    let data = match &x.data {
        Data::F(v) => Data::F(v.iter().map(|&a| unary_rounded(u, d, a)).collect()),
        Data::I(v) => {
            let f: fn(i64) -> i64 = match u {
                UnaryOp::Neg => i64::wrapping_neg,
                UnaryOp::Abs => i64::wrapping_abs,
                UnaryOp::Not => |a| !a,
                UnaryOp::Sign => i64::signum,
                _ => return Err(ctx.internal(format!("{} on {d}", u.name()))),
            };
            Data::I(v.iter().map(|&a| wrap_int(d, f(a))).collect())
        }
        Data::B(v) if u == UnaryOp::Not => Data::B(v.iter().map(|&a| !a).collect()),
        _ => return Err(ctx.internal(format!("{} on {d}", u.name()))),
    };
    Ok(Value {
        dtype: d,
        shape: x.shape.clone(),
        data,
    })
}

/// An elementwise binary op on operands of identical shape and dtype.
pub(crate) fn binary(ctx: &Ctx, b: BinaryOp, x: &Value, y: &Value) -> Result<Value, EvalError> {
    let d = x.dtype;
    if x.shape != y.shape || x.dtype != y.dtype {
        return Err(ctx.internal("binary operands differ in shape or dtype"));
    }
    let bad = || ctx.internal(format!("{} on {d}", b.name()));
    let data = match (&x.data, &y.data) {
        (Data::F(p), Data::F(q)) if b.is_comparison() => {
            Data::B(p.iter().zip(q).map(|(&s, &t)| compare(b, s, t)).collect())
        }
        (Data::F(_), Data::F(_)) if b.is_logical() => return Err(bad()),
        (Data::F(p), Data::F(q)) => Data::F(
            p.iter()
                .zip(q)
                .map(|(&s, &t)| round_float(d, binary_float(b, s, t)))
                .collect(),
        ),
        (Data::I(p), Data::I(q)) if b.is_comparison() => {
            Data::B(p.iter().zip(q).map(|(&s, &t)| compare(b, s, t)).collect())
        }
        (Data::I(_), Data::I(_)) if b == BinaryOp::Pow => return Err(bad()),
        (Data::I(p), Data::I(q)) => Data::I(
            p.iter()
                .zip(q)
                .map(|(&s, &t)| wrap_int(d, binary_int(b, s, t)))
                .collect(),
        ),
        (Data::B(p), Data::B(q)) if b.is_comparison() => {
            Data::B(p.iter().zip(q).map(|(&s, &t)| compare(b, s, t)).collect())
        }
        (Data::B(p), Data::B(q)) if b.is_logical() => {
            let f: fn(bool, bool) -> bool = match b {
                BinaryOp::And => |s, t| s & t,
                BinaryOp::Or => |s, t| s | t,
                _ => |s, t| s ^ t,
            };
            Data::B(p.iter().zip(q).map(|(&s, &t)| f(s, t)).collect())
        }
        _ => return Err(bad()),
    };
    let dtype = if b.is_comparison() { DType::Bool } else { d };
    Ok(Value {
        dtype,
        shape: x.shape.clone(),
        data,
    })
}

/// `where(cond, a, b)` on identical shapes.
pub(crate) fn where_(ctx: &Ctx, c: &Value, a: &Value, b: &Value) -> Result<Value, EvalError> {
    if c.shape != a.shape || a.shape != b.shape {
        return Err(ctx.internal("where operands differ in shape"));
    }
    let Data::B(c) = &c.data else {
        return Err(ctx.internal("where condition is not bool"));
    };
    fn pick<T: Copy>(c: &[bool], a: &[T], b: &[T]) -> Vec<T> {
        c.iter()
            .zip(a.iter().zip(b))
            .map(|(&c, (&a, &b))| if c { a } else { b })
            .collect()
    }
    let data = match (&a.data, &b.data) {
        (Data::F(p), Data::F(q)) => Data::F(pick(c, p, q)),
        (Data::I(p), Data::I(q)) => Data::I(pick(c, p, q)),
        (Data::B(p), Data::B(q)) => Data::B(pick(c, p, q)),
        _ => return Err(ctx.internal("where values of different kinds")),
    };
    Ok(Value {
        dtype: a.dtype,
        shape: a.shape.clone(),
        data,
    })
}

/// Elementwise conversion to `to` (block-quantized operands are dequantized first).
pub(crate) fn cast(ctx: &Ctx, x: &Value, to: DType) -> Result<Value, EvalError> {
    let floats;
    let src = match &x.data {
        Data::Q(_) => {
            floats = Data::F(x.float_values(ctx)?);
            &floats
        }
        other => other,
    };
    let data = match src {
        Data::F(v) if to.is_float() => Data::F(v.iter().map(|&a| round_float(to, a)).collect()),
        Data::F(v) if to.is_int() => Data::I(v.iter().map(|&a| float_to_int(to, a)).collect()),
        Data::F(v) => Data::B(v.iter().map(|&a| a != 0.0).collect()),
        Data::I(v) if to.is_float() => Data::F(v.iter().map(|&a| int_to_float(to, a)).collect()),
        Data::I(v) if to.is_int() => Data::I(v.iter().map(|&a| wrap_int(to, a)).collect()),
        Data::I(v) => Data::B(v.iter().map(|&a| a != 0).collect()),
        Data::B(v) if to.is_float() => Data::F(v.iter().map(|&a| f64::from(u8::from(a))).collect()),
        Data::B(v) if to.is_int() => Data::I(v.iter().map(|&a| i64::from(a)).collect()),
        Data::B(v) => Data::B(v.clone()),
        Data::Q(_) => return Err(ctx.internal("quantized data after dequantization")),
    };
    if to.is_quantized() {
        return Err(ctx.internal(format!("cast to {to}")));
    }
    Ok(Value {
        dtype: to,
        shape: x.shape.clone(),
        data,
    })
}

/// A one-element [`Data`] holding `value` as an element of `dtype`.
pub(crate) fn scalar_data(ctx: &Ctx, value: Scalar, dtype: DType) -> Result<Data, EvalError> {
    Ok(match (value, dtype) {
        (Scalar::Float(v), d) if d.is_float() => Data::F(vec![round_float(d, v)]),
        (Scalar::Int(v), d) if d.is_float() => Data::F(vec![int_to_float(d, v)]),
        (Scalar::Int(v), d) if d.is_int() => Data::I(vec![wrap_int(d, v)]),
        (Scalar::Bool(v), DType::Bool) => Data::B(vec![v]),
        (v, d) => return Err(ctx.internal(format!("value {v} for dtype {d}"))),
    })
}

/// `full(value)` of the given concrete shape.
pub(crate) fn full(
    ctx: &Ctx,
    value: Scalar,
    dtype: DType,
    shape: &[usize],
) -> Result<Value, EvalError> {
    let n = prod(shape);
    let data = match scalar_data(ctx, value, dtype)? {
        Data::F(v) => Data::F(vec![v[0]; n]),
        Data::I(v) => Data::I(vec![v[0]; n]),
        Data::B(v) => Data::B(vec![v[0]; n]),
        Data::Q(_) => return Err(ctx.internal("quantized fill")),
    };
    Ok(Value {
        dtype,
        shape: shape.to_vec(),
        data,
    })
}

/// `iota(axis)` of the given concrete shape: each element is its index along `axis`
/// (wrapped to an integer dtype's width, or rounded to a float dtype).
pub(crate) fn iota(
    ctx: &Ctx,
    axis: usize,
    dtype: DType,
    shape: &[usize],
) -> Result<Value, EvalError> {
    if axis >= shape.len() {
        return Err(ctx.internal("iota axis out of range"));
    }
    let mut idx = Vec::with_capacity(prod(shape));
    for_each_index(shape, |i, _| idx.push(i[axis] as i64));
    let data = if dtype.is_float() {
        Data::F(idx.into_iter().map(|i| int_to_float(dtype, i)).collect())
    } else if dtype.is_int() {
        Data::I(idx.into_iter().map(|i| wrap_int(dtype, i)).collect())
    } else {
        return Err(ctx.internal(format!("iota of dtype {dtype}")));
    };
    Ok(Value {
        dtype,
        shape: shape.to_vec(),
        data,
    })
}
