//! Batched matrix product.

use super::error::Ctx;
use super::value::{for_each_index, strides, Data, Value};
use super::EvalError;
use crate::dtype::DType;
use crate::numerics::{round_float, wrap_int};

/// `op(a) @ op(b)` with broadcast batch axes; floats accumulate in f64 and round once to
/// `out`, integers wrap. Block-quantized operands are dequantized first.
pub(crate) fn matmul(
    ctx: &Ctx,
    a: &Value,
    b: &Value,
    trans_a: bool,
    trans_b: bool,
    out: DType,
) -> Result<Value, EvalError> {
    let (ra, rb) = (a.shape.len(), b.shape.len());
    if ra < 2 || rb < 2 {
        return Err(ctx.internal("matmul operand of rank < 2"));
    }
    let (a0, a1) = (a.shape[ra - 2], a.shape[ra - 1]);
    let (b0, b1) = (b.shape[rb - 2], b.shape[rb - 1]);
    let (m, k) = if trans_a { (a1, a0) } else { (a0, a1) };
    let (kb, n) = if trans_b { (b1, b0) } else { (b0, b1) };
    if k != kb {
        return Err(ctx.internal("matmul contraction dims differ"));
    }
    // Broadcast the batch axes (NumPy rules, aligned right).
    let r = ra.max(rb) - 2;
    let mut batch = Vec::with_capacity(r);
    for i in 0..r {
        let da = (i + ra - 2).checked_sub(r).map_or(1, |j| a.shape[j]);
        let db = (i + rb - 2).checked_sub(r).map_or(1, |j| b.shape[j]);
        batch.push(match (da, db) {
            _ if da == db => da,
            (1, _) => db,
            (_, 1) => da,
            _ => return Err(ctx.internal("matmul batch dims do not broadcast")),
        });
    }
    let (sa, sb) = (strides(&a.shape), strides(&b.shape));
    let mut bases = Vec::new();
    for_each_index(&batch, |idx, _| {
        let off = |shape: &[usize], st: &[usize], rank: usize| -> usize {
            (0..rank - 2)
                .filter(|&j| shape[j] != 1)
                .map(|j| idx[r - (rank - 2) + j] * st[j])
                .sum()
        };
        bases.push((off(&a.shape, &sa, ra), off(&b.shape, &sb, rb)));
    });
    // Element offsets of op(a)[i, l] and op(b)[l, j] within one matrix.
    let at = |i: usize, l: usize| if trans_a { l * m + i } else { i * k + l };
    let bt = |l: usize, j: usize| if trans_b { j * k + l } else { l * n + j };
    let mut shape = batch;
    shape.extend([m, n]);
    let count = bases.len() * m * n;
    let data = if out.is_float() {
        let (av, bv) = (a.float_values(ctx)?, b.float_values(ctx)?);
        let mut res = Vec::with_capacity(count);
        for &(oa, ob) in &bases {
            for i in 0..m {
                for j in 0..n {
                    let s = (0..k).fold(0.0, |s, l| s + av[oa + at(i, l)] * bv[ob + bt(l, j)]);
                    res.push(round_float(out, s));
                }
            }
        }
        Data::F(res)
    } else {
        let (Data::I(av), Data::I(bv)) = (&a.data, &b.data) else {
            return Err(ctx.internal(format!("matmul of {} and {}", a.dtype, b.dtype)));
        };
        let mut res = Vec::with_capacity(count);
        for &(oa, ob) in &bases {
            for i in 0..m {
                for j in 0..n {
                    let s = (0..k).fold(0i64, |s, l| {
                        s.wrapping_add(av[oa + at(i, l)].wrapping_mul(bv[ob + bt(l, j)]))
                    });
                    res.push(wrap_int(out, s));
                }
            }
        }
        Data::I(res)
    };
    Ok(Value {
        dtype: out,
        shape,
        data,
    })
}
