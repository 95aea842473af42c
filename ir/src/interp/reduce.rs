//! Reductions: sum, prod, max, min, argmax.

use super::error::Ctx;
use super::value::{for_each_index, prod, strides, Data, Value};
use super::EvalError;
use crate::dtype::DType;
use crate::numerics::{round_float, wrap_int};
use crate::op::ReduceOp;

/// Reduces `x` over `axes` (sorted, unique).
pub(crate) fn reduce(
    ctx: &Ctx,
    op: ReduceOp,
    axes: &[usize],
    keepdim: bool,
    x: &Value,
) -> Result<Value, EvalError> {
    let rank = x.shape.len();
    if axes.iter().any(|&a| a >= rank) || axes.is_empty() {
        return Err(ctx.internal("reduce axes out of range"));
    }
    // The output shape with reduced axes kept as 1, and the map input index -> output index.
    let kept: Vec<usize> = (0..rank)
        .map(|i| if axes.contains(&i) { 1 } else { x.shape[i] })
        .collect();
    let kept_strides = strides(&kept);
    let out_numel = prod(&kept);
    let group = axes
        .iter()
        .fold(1usize, |g, &a| g.saturating_mul(x.shape[a]));
    if group == 0 && out_numel > 0 && matches!(op, ReduceOp::Max | ReduceOp::Min | ReduceOp::ArgMax)
    {
        let axis = axes
            .iter()
            .copied()
            .find(|&a| x.shape[a] == 0)
            .unwrap_or(axes[0]);
        return Err(EvalError::EmptyReduction {
            node: ctx.node,
            op: ctx.op.clone(),
            axis,
        });
    }
    let mut out_of = Vec::with_capacity(x.numel());
    let mut along = Vec::with_capacity(x.numel());
    for_each_index(&x.shape, |idx, _| {
        let o: usize = (0..rank)
            .filter(|i| !axes.contains(i))
            .map(|i| idx[i] * kept_strides[i])
            .sum();
        out_of.push(o);
        along.push(idx[axes[0]] as i64);
    });
    let d = x.dtype;
    let data = match (&x.data, op) {
        (Data::F(v), ReduceOp::Sum | ReduceOp::Prod) => {
            let sum = op == ReduceOp::Sum;
            let mut acc = vec![if sum { 0.0 } else { 1.0 }; out_numel];
            for (&o, &a) in out_of.iter().zip(v) {
                if sum {
                    acc[o] += a;
                } else {
                    acc[o] *= a;
                }
            }
            Data::F(acc.into_iter().map(|a| round_float(d, a)).collect())
        }
        (Data::I(v), ReduceOp::Sum | ReduceOp::Prod) => {
            let sum = op == ReduceOp::Sum;
            let mut acc = vec![i64::from(!sum); out_numel];
            for (&o, &a) in out_of.iter().zip(v) {
                acc[o] = if sum {
                    acc[o].wrapping_add(a)
                } else {
                    acc[o].wrapping_mul(a)
                };
            }
            Data::I(acc.into_iter().map(|a| wrap_int(d, a)).collect())
        }
        (Data::F(v), ReduceOp::Max | ReduceOp::Min) => {
            let max = op == ReduceOp::Max;
            let mut acc: Vec<Option<f64>> = vec![None; out_numel];
            for (&o, &a) in out_of.iter().zip(v) {
                acc[o] = Some(match acc[o] {
                    None => a,
                    Some(b) if b.is_nan() || a.is_nan() => f64::NAN,
                    Some(b) if (a > b) == max && a != b => a,
                    Some(b) => b,
                });
            }
            Data::F(acc.into_iter().map(|a| a.unwrap_or(f64::NAN)).collect())
        }
        (Data::I(v), ReduceOp::Max | ReduceOp::Min) => {
            let max = op == ReduceOp::Max;
            let mut acc: Vec<Option<i64>> = vec![None; out_numel];
            for (&o, &a) in out_of.iter().zip(v) {
                acc[o] = Some(match acc[o] {
                    None => a,
                    Some(b) if max => a.max(b),
                    Some(b) => a.min(b),
                });
            }
            Data::I(acc.into_iter().map(|a| a.unwrap_or(0)).collect())
        }
        (Data::F(v), ReduceOp::ArgMax) => {
            // First index of the maximum; NaN beats everything (the first NaN wins).
            let mut best: Vec<Option<(f64, i64)>> = vec![None; out_numel];
            for ((&o, &a), &i) in out_of.iter().zip(v).zip(&along) {
                let better = match best[o] {
                    None => true,
                    Some((b, _)) => !b.is_nan() && (a.is_nan() || a > b),
                };
                if better {
                    best[o] = Some((a, i));
                }
            }
            Data::I(best.into_iter().map(|b| b.map_or(0, |(_, i)| i)).collect())
        }
        (Data::I(v), ReduceOp::ArgMax) => {
            let mut best: Vec<Option<(i64, i64)>> = vec![None; out_numel];
            for ((&o, &a), &i) in out_of.iter().zip(v).zip(&along) {
                let better = match best[o] {
                    None => true,
                    Some((b, _)) => a > b,
                };
                if better {
                    best[o] = Some((a, i));
                }
            }
            Data::I(best.into_iter().map(|b| b.map_or(0, |(_, i)| i)).collect())
        }
        _ => return Err(ctx.internal(format!("{} on {d}", op.name()))),
    };
    let shape = if keepdim {
        kept
    } else {
        (0..rank)
            .filter(|i| !axes.contains(i))
            .map(|i| x.shape[i])
            .collect()
    };
    let dtype = if op == ReduceOp::ArgMax {
        DType::I64
    } else {
        d
    };
    Ok(Value { dtype, shape, data })
}
