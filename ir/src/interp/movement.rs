//! View-like ops: reshape, permute, expand, slice, pad, concat, flip. Each is written as
//! "output element `i` is input element `src(i)`" and materialized with [`Data::take`].

use super::elementwise::scalar_data;
use super::error::Ctx;
use super::value::{for_each_index, prod, strides, Data, Value};
use super::EvalError;
use crate::dtype::Scalar;

fn gathered(ctx: &Ctx, x: &Value, shape: Vec<usize>, src: &[usize]) -> Result<Value, EvalError> {
    let data = x
        .data
        .take(src)
        .ok_or_else(|| ctx.internal("view of block-quantized data"))?;
    Ok(Value {
        dtype: x.dtype,
        shape,
        data,
    })
}

/// Same elements, new shape.
pub(crate) fn reshape(ctx: &Ctx, x: &Value, shape: &[usize]) -> Result<Value, EvalError> {
    if prod(shape) != x.numel() {
        return Err(ctx.internal("reshape changes the element count"));
    }
    Ok(Value {
        dtype: x.dtype,
        shape: shape.to_vec(),
        data: x.data.clone(),
    })
}

/// Output axis `i` is input axis `perm[i]`.
pub(crate) fn permute(ctx: &Ctx, x: &Value, perm: &[usize]) -> Result<Value, EvalError> {
    if perm.len() != x.shape.len() || perm.iter().any(|&p| p >= x.shape.len()) {
        return Err(ctx.internal("bad permutation"));
    }
    let st = strides(&x.shape);
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let mut src = Vec::with_capacity(x.numel());
    for_each_index(&shape, |idx, _| {
        src.push(idx.iter().zip(perm).map(|(&i, &p)| i * st[p]).sum());
    });
    gathered(ctx, x, shape, &src)
}

/// NumPy broadcast to `shape`.
pub(crate) fn expand(ctx: &Ctx, x: &Value, shape: &[usize]) -> Result<Value, EvalError> {
    let (r, rx) = (shape.len(), x.shape.len());
    let fits = rx <= r
        && x.shape
            .iter()
            .enumerate()
            .all(|(j, &d)| d == 1 || d == shape[r - rx + j]);
    if !fits {
        return Err(ctx.internal(format!("expand {:?} to {shape:?}", x.shape)));
    }
    let st = strides(&x.shape);
    let mut src = Vec::with_capacity(prod(shape));
    for_each_index(shape, |idx, _| {
        src.push(
            (0..rx)
                .filter(|&j| x.shape[j] != 1)
                .map(|j| idx[r - rx + j] * st[j])
                .sum(),
        );
    });
    gathered(ctx, x, shape.to_vec(), &src)
}

/// `len` elements `start, start + step, ...` along `axis` (bounds already checked).
pub(crate) fn slice(
    ctx: &Ctx,
    x: &Value,
    axis: usize,
    start: usize,
    step: usize,
    len: usize,
) -> Result<Value, EvalError> {
    let last = if len == 0 {
        start
    } else {
        start + (len - 1) * step
    };
    if axis >= x.shape.len() || (len > 0 && last >= x.shape[axis]) {
        return Err(ctx.internal("slice out of range"));
    }
    let st = strides(&x.shape);
    let mut shape = x.shape.clone();
    shape[axis] = len;
    let mut src = Vec::with_capacity(prod(&shape));
    for_each_index(&shape, |idx, _| {
        src.push(
            idx.iter()
                .enumerate()
                .map(|(d, &i)| if d == axis { start + i * step } else { i } * st[d])
                .sum(),
        );
    });
    gathered(ctx, x, shape, &src)
}

/// Pads each axis with `(before, after)` copies of `value`.
pub(crate) fn pad(
    ctx: &Ctx,
    x: &Value,
    pads: &[(usize, usize)],
    value: Scalar,
) -> Result<Value, EvalError> {
    if pads.len() != x.shape.len() {
        return Err(ctx.internal("one padding pair per axis"));
    }
    let st = strides(&x.shape);
    let shape: Vec<usize> = x
        .shape
        .iter()
        .zip(pads)
        .map(|(&n, &(lo, hi))| lo + n + hi)
        .collect();
    let mut src = Vec::with_capacity(prod(&shape));
    for_each_index(&shape, |idx, _| {
        let mut off = 0;
        for (d, &i) in idx.iter().enumerate() {
            let lo = pads[d].0;
            if i < lo || i - lo >= x.shape[d] {
                src.push(None);
                return;
            }
            off += (i - lo) * st[d];
        }
        src.push(Some(off));
    });
    let fill = scalar_data(ctx, value, x.dtype)?;
    let data = x
        .data
        .take_or(&src, &fill)
        .ok_or_else(|| ctx.internal("pad of block-quantized data or mismatched fill"))?;
    Ok(Value {
        dtype: x.dtype,
        shape,
        data,
    })
}

/// Joins `xs` along `axis`.
pub(crate) fn concat(ctx: &Ctx, xs: &[&Value], axis: usize) -> Result<Value, EvalError> {
    let first = xs
        .first()
        .ok_or_else(|| ctx.internal("concat of nothing"))?;
    let rank = first.shape.len();
    let ok = axis < rank
        && xs.iter().all(|x| {
            x.dtype == first.dtype
                && x.shape.len() == rank
                && (0..rank).all(|d| d == axis || x.shape[d] == first.shape[d])
        });
    if !ok {
        return Err(ctx.internal("concat operands do not fit"));
    }
    let outer = prod(&first.shape[..axis]);
    let inner = prod(&first.shape[axis + 1..]);
    let mut shape = first.shape.clone();
    shape[axis] = xs.iter().map(|x| x.shape[axis]).sum();
    fn join<T: Copy>(parts: &[(&[T], usize)], outer: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(parts.iter().map(|(p, _)| p.len()).sum());
        for o in 0..outer {
            for &(p, chunk) in parts {
                out.extend_from_slice(&p[o * chunk..(o + 1) * chunk]);
            }
        }
        out
    }
    let chunk = |x: &Value| x.shape[axis].saturating_mul(inner);
    let data = match &first.data {
        Data::F(_) => {
            let mut parts = Vec::new();
            for x in xs {
                let Data::F(v) = &x.data else {
                    return Err(ctx.internal("mixed data"));
                };
                parts.push((v.as_slice(), chunk(x)));
            }
            Data::F(join(&parts, outer))
        }
        Data::I(_) => {
            let mut parts = Vec::new();
            for x in xs {
                let Data::I(v) = &x.data else {
                    return Err(ctx.internal("mixed data"));
                };
                parts.push((v.as_slice(), chunk(x)));
            }
            Data::I(join(&parts, outer))
        }
        Data::B(_) => {
            let mut parts = Vec::new();
            for x in xs {
                let Data::B(v) = &x.data else {
                    return Err(ctx.internal("mixed data"));
                };
                parts.push((v.as_slice(), chunk(x)));
            }
            Data::B(join(&parts, outer))
        }
        Data::Q(_) => return Err(ctx.internal("concat of block-quantized data")),
    };
    Ok(Value {
        dtype: first.dtype,
        shape,
        data,
    })
}

/// Reverses `axes`.
pub(crate) fn flip(ctx: &Ctx, x: &Value, axes: &[usize]) -> Result<Value, EvalError> {
    if axes.iter().any(|&a| a >= x.shape.len()) {
        return Err(ctx.internal("flip axis out of range"));
    }
    let st = strides(&x.shape);
    let mut src = Vec::with_capacity(x.numel());
    for_each_index(&x.shape, |idx, _| {
        src.push(
            idx.iter()
                .enumerate()
                .map(|(d, &i)| {
                    let i = if axes.contains(&d) {
                        x.shape[d] - 1 - i
                    } else {
                        i
                    };
                    i * st[d]
                })
                .sum(),
        );
    });
    gathered(ctx, x, x.shape.clone(), &src)
}
