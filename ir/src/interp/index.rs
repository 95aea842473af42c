//! Indexing ops: index_select, gather, scatter, slice_update.

use super::error::Ctx;
use super::value::{prod, strides, try_for_each_index, Data, Value};
use super::EvalError;
use crate::numerics::{round_float, wrap_int};
use crate::op::ScatterReduce;

/// The integer elements of an index operand.
fn indices<'a>(ctx: &Ctx, idx: &'a Value) -> Result<&'a [i64], EvalError> {
    match &idx.data {
        Data::I(v) => Ok(v),
        _ => Err(ctx.internal(format!("indices of dtype {}", idx.dtype))),
    }
}

/// Checks `0 <= i < size` and returns `i` as usize.
fn checked(ctx: &Ctx, i: i64, axis: usize, size: usize) -> Result<usize, EvalError> {
    match usize::try_from(i) {
        Ok(u) if u < size => Ok(u),
        _ => Err(ctx.out_of_bounds(i, axis, size)),
    }
}

/// `index_select(x, axis, idx)`; a block-quantized `x` (indexed on an axis before the last)
/// has whole rows of blocks copied, and the result stays quantized.
pub(crate) fn index_select(
    ctx: &Ctx,
    x: &Value,
    axis: usize,
    idx: &Value,
) -> Result<Value, EvalError> {
    if axis >= x.shape.len() || idx.shape.len() != 1 {
        return Err(ctx.internal("index_select axis or index rank"));
    }
    let size = x.shape[axis];
    let picks: Vec<usize> = indices(ctx, idx)?
        .iter()
        .map(|&i| checked(ctx, i, axis, size))
        .collect::<Result<_, _>>()?;
    let mut shape = x.shape.clone();
    shape[axis] = picks.len();
    let outer = prod(&x.shape[..axis]);
    let inner = prod(&x.shape[axis + 1..]);
    if let Data::Q(bytes) = &x.data {
        let q = x
            .dtype
            .quant()
            .ok_or_else(|| ctx.internal("raw blocks without a quantized dtype"))?;
        if axis + 1 >= x.shape.len() || q.bytes_for(inner).is_none() {
            return Err(ctx.internal("index_select splits quantized blocks"));
        }
        let row = inner / q.block_size() * q.block_bytes();
        let mut out = Vec::with_capacity(outer * picks.len() * row);
        for o in 0..outer {
            for &p in &picks {
                let at = (o * size + p) * row;
                let chunk = bytes
                    .get(at..at + row)
                    .ok_or_else(|| ctx.internal("quantized data shorter than its shape"))?;
                out.extend_from_slice(chunk);
            }
        }
        return Ok(Value {
            dtype: x.dtype,
            shape,
            data: Data::Q(out),
        });
    }
    let mut src = Vec::with_capacity(outer * picks.len() * inner);
    for o in 0..outer {
        for &p in &picks {
            let base = (o * size + p) * inner;
            src.extend(base..base + inner);
        }
    }
    let data = x
        .data
        .take(&src)
        .ok_or_else(|| ctx.internal("index_select data"))?;
    Ok(Value {
        dtype: x.dtype,
        shape,
        data,
    })
}

/// Checks that `idx` fits `x` on every axis but `axis` (PyTorch's gather/scatter rule).
fn check_fits(ctx: &Ctx, x: &[usize], idx: &[usize], axis: usize) -> Result<(), EvalError> {
    let fits = x.len() == idx.len() && (0..x.len()).all(|d| d == axis || idx[d] <= x[d]);
    if fits {
        Ok(())
    } else {
        Err(ctx.operand_shape(
            &[x, idx],
            format!("indices of the operand's rank, no larger on any axis but {axis}"),
        ))
    }
}

/// `torch.gather(x, axis, idx)`.
pub(crate) fn gather(ctx: &Ctx, x: &Value, axis: usize, idx: &Value) -> Result<Value, EvalError> {
    check_fits(ctx, &x.shape, &idx.shape, axis)?;
    let iv = indices(ctx, idx)?;
    let st = strides(&x.shape);
    let size = x.shape[axis];
    let mut src = Vec::with_capacity(iv.len());
    try_for_each_index(&idx.shape, |i, flat| {
        let p = checked(ctx, iv[flat], axis, size)?;
        src.push(
            i.iter()
                .enumerate()
                .map(|(d, &k)| if d == axis { p } else { k } * st[d])
                .sum(),
        );
        Ok(())
    })?;
    let data = x
        .data
        .take(&src)
        .ok_or_else(|| ctx.internal("gather data"))?;
    Ok(Value {
        dtype: x.dtype,
        shape: idx.shape.clone(),
        data,
    })
}

/// `torch.scatter(dst, axis, idx, src)` / `scatter_add`. Writes go in row-major order of
/// `idx`, so with duplicate indices the last write wins; float additions accumulate in f64
/// and round once per element.
pub(crate) fn scatter(
    ctx: &Ctx,
    dst: &Value,
    axis: usize,
    idx: &Value,
    src: &Value,
    reduce: ScatterReduce,
) -> Result<Value, EvalError> {
    check_fits(ctx, &dst.shape, &idx.shape, axis)?;
    if idx.shape != src.shape {
        return Err(ctx.internal("scatter indices and source differ in shape"));
    }
    let iv = indices(ctx, idx)?;
    let st = strides(&dst.shape);
    let size = dst.shape[axis];
    let mut targets = Vec::with_capacity(iv.len());
    try_for_each_index(&idx.shape, |i, flat| {
        let p = checked(ctx, iv[flat], axis, size)?;
        targets.push(
            i.iter()
                .enumerate()
                .map(|(d, &k)| if d == axis { p } else { k } * st[d])
                .sum::<usize>(),
        );
        Ok(())
    })?;
    let add = reduce == ScatterReduce::Add;
    let d = dst.dtype;
    let data = match (&dst.data, &src.data) {
        (Data::F(o), Data::F(s)) => {
            let mut out = o.clone();
            for (&t, &v) in targets.iter().zip(s) {
                out[t] = if add { out[t] + v } else { v };
            }
            Data::F(out.into_iter().map(|v| round_float(d, v)).collect())
        }
        (Data::I(o), Data::I(s)) => {
            let mut out = o.clone();
            for (&t, &v) in targets.iter().zip(s) {
                out[t] = if add { out[t].wrapping_add(v) } else { v };
            }
            Data::I(out.into_iter().map(|v| wrap_int(d, v)).collect())
        }
        (Data::B(o), Data::B(s)) if !add => {
            let mut out = o.clone();
            for (&t, &v) in targets.iter().zip(s) {
                out[t] = v;
            }
            Data::B(out)
        }
        _ => return Err(ctx.internal(format!("scatter on {d}"))),
    };
    Ok(Value {
        dtype: d,
        shape: dst.shape.clone(),
        data,
    })
}

/// `dst` with `src` written at `start` along `axis` (bounds already checked).
pub(crate) fn slice_update(
    ctx: &Ctx,
    dst: &Value,
    src: &Value,
    axis: usize,
    start: usize,
) -> Result<Value, EvalError> {
    let rank = dst.shape.len();
    let fits = axis < rank
        && src.shape.len() == rank
        && (0..rank).all(|d| d == axis || src.shape[d] == dst.shape[d])
        && start
            .checked_add(src.shape[axis])
            .is_some_and(|end| end <= dst.shape[axis]);
    if !fits {
        return Err(ctx.internal("slice_update source does not fit"));
    }
    let outer = prod(&dst.shape[..axis]);
    let inner = prod(&dst.shape[axis + 1..]);
    let (n_dst, n_src) = (
        dst.shape[axis].saturating_mul(inner),
        src.shape[axis].saturating_mul(inner),
    );
    fn write<T: Copy>(out: &mut [T], s: &[T], outer: usize, n_dst: usize, n_src: usize, at: usize) {
        for o in 0..outer {
            out[o * n_dst + at..o * n_dst + at + n_src]
                .copy_from_slice(&s[o * n_src..(o + 1) * n_src]);
        }
    }
    let at = start.saturating_mul(inner);
    let data = match (&dst.data, &src.data) {
        (Data::F(o), Data::F(s)) => {
            let mut out = o.clone();
            write(&mut out, s, outer, n_dst, n_src, at);
            Data::F(out)
        }
        (Data::I(o), Data::I(s)) => {
            let mut out = o.clone();
            write(&mut out, s, outer, n_dst, n_src, at);
            Data::I(out)
        }
        (Data::B(o), Data::B(s)) => {
            let mut out = o.clone();
            write(&mut out, s, outer, n_dst, n_src, at);
            Data::B(out)
        }
        _ => return Err(ctx.internal("slice_update data")),
    };
    Ok(Value {
        dtype: dst.dtype,
        shape: dst.shape.clone(),
        data,
    })
}
