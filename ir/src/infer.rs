//! Shape and dtype inference: the one place that decides whether an op fits its operands.

use crate::dim::Dim;
use crate::dtype::{DType, Scalar};
use crate::error::IrError;
use crate::op::{BinaryOp, Op, ReduceOp, ScatterReduce, UnaryOp};
use crate::shape::{broadcast_shapes, Shape, TensorType};

/// The type of `op` applied to operands of types `ins`, or why it does not fit: the same
/// inference [`crate::Graph::push`] runs, for tools (the e-graph optimizer) that type nodes
/// outside a [`crate::Graph`].
pub fn infer_type(op: &Op, ins: &[&TensorType]) -> Result<TensorType, IrError> {
    infer(op, ins)
}

/// The type of `op` applied to operands of types `ins`, or why it does not fit.
pub(crate) fn infer(op: &Op, ins: &[&TensorType]) -> Result<TensorType, IrError> {
    let name = op.name();
    let name = name.as_str();
    arity(op, name, ins.len())?;
    match op {
        Op::Input { dtype, shape, .. }
        | Op::Param { dtype, shape, .. }
        | Op::State { dtype, shape, .. } => {
            check_shape(name, shape)?;
            check_blocks(name, *dtype, shape)?;
            Ok(TensorType::new(*dtype, shape.clone()))
        }
        Op::Full {
            value,
            dtype,
            shape,
        } => {
            check_shape(name, shape)?;
            not_quantized_attr(name, *dtype)?;
            check_value(name, *value, *dtype)?;
            Ok(TensorType::new(*dtype, shape.clone()))
        }
        Op::Constant { value } => Ok(TensorType::new(
            value.dtype(),
            Shape::new(value.shape().iter().copied()),
        )),
        Op::DimValue { dtype, .. } => {
            if !(dtype.is_int() || dtype.is_float()) {
                return Err(IrError::attr(
                    name,
                    format!("dtype must be an integer or float type, not {dtype}"),
                ));
            }
            Ok(TensorType::new(*dtype, Shape::scalar()))
        }
        Op::Iota { axis, dtype, shape } => {
            check_shape(name, shape)?;
            if !(dtype.is_int() || dtype.is_float()) {
                return Err(IrError::attr(
                    name,
                    format!("dtype must be an integer or float type, not {dtype}"),
                ));
            }
            let ty = TensorType::new(*dtype, shape.clone());
            check_axis(name, *axis, &ty)?;
            Ok(ty)
        }
        Op::Unary(u) => unary(name, *u, ins[0]),
        Op::Binary(b) => binary(name, *b, ins[0], ins[1]),
        Op::Where => {
            let (c, a, b) = (ins[0], ins[1], ins[2]);
            if c.dtype != DType::Bool || a.dtype != b.dtype || a.dtype.is_quantized() {
                return Err(IrError::dtype(
                    name,
                    ins,
                    "a bool condition and two values of the same (not quantized) dtype",
                ));
            }
            if c.shape != a.shape || a.shape != b.shape {
                return Err(IrError::shape(
                    name,
                    ins,
                    "identical shapes (broadcast first with expand)",
                ));
            }
            Ok(a.clone())
        }
        Op::Cast { to } => {
            not_quantized_attr(name, *to)?;
            Ok(TensorType::new(*to, ins[0].shape.clone()))
        }
        Op::Reduce { op, axes, keepdim } => reduce(name, *op, axes, *keepdim, ins[0]),
        Op::Reshape { shape } => {
            let x = ins[0];
            plain(name, ins)?;
            check_shape(name, shape)?;
            if x.shape.numel() != shape.numel() {
                return Err(IrError::shape(
                    name,
                    ins,
                    format!(
                        "the same number of elements as the target shape {shape} ({} vs {})",
                        x.shape.numel(),
                        shape.numel()
                    ),
                ));
            }
            Ok(TensorType::new(x.dtype, shape.clone()))
        }
        Op::Permute { perm } => {
            let x = ins[0];
            plain(name, ins)?;
            let mut seen = vec![false; x.rank()];
            let valid = perm.len() == x.rank()
                && perm
                    .iter()
                    .all(|&p| p < x.rank() && !std::mem::replace(&mut seen[p], true));
            if !valid {
                return Err(IrError::attr(
                    name,
                    format!(
                        "{perm:?} is not a permutation of the {} axes of {x}",
                        x.rank()
                    ),
                ));
            }
            let dims = perm.iter().map(|&p| x.shape[p].clone()).collect();
            Ok(TensorType::new(x.dtype, Shape(dims)))
        }
        Op::Expand { shape } => {
            let x = ins[0];
            plain(name, ins)?;
            check_shape(name, shape)?;
            let fits = x.rank() <= shape.rank()
                && x.shape.dims().iter().enumerate().all(|(i, d)| {
                    let t = &shape[shape.rank() - x.rank() + i];
                    d == t || *d == 1
                });
            if !fits {
                return Err(IrError::shape(
                    name,
                    ins,
                    format!(
                        "a shape that broadcasts to {shape} (each dim equal to the target's or 1)"
                    ),
                ));
            }
            Ok(TensorType::new(x.dtype, shape.clone()))
        }
        Op::Slice {
            axis,
            start,
            end,
            step,
        } => {
            let x = ins[0];
            plain(name, ins)?;
            check_axis(name, *axis, x)?;
            if *step < 1 {
                return Err(IrError::attr(
                    name,
                    format!("step must be at least 1, got {step}"),
                ));
            }
            let size = &x.shape[*axis];
            check_range(name, ins, start, end, size)?;
            let len = (end.clone() - start.clone() + Dim::constant(step - 1))
                .floor_div(&Dim::constant(*step));
            let mut dims = x.shape.0.clone();
            dims[*axis] = len;
            Ok(TensorType::new(x.dtype, Shape(dims)))
        }
        Op::Pad { pads, value } => {
            let x = ins[0];
            plain(name, ins)?;
            if pads.len() != x.rank() {
                return Err(IrError::attr(
                    name,
                    format!(
                        "needs one (before, after) pair per axis: {} pairs for {x}",
                        pads.len()
                    ),
                ));
            }
            check_value(name, *value, x.dtype)?;
            let mut dims = Vec::with_capacity(x.rank());
            for (i, (lo, hi)) in pads.iter().enumerate() {
                for p in [lo, hi] {
                    if p.as_const().is_some_and(|v| v < 0) {
                        return Err(IrError::attr(
                            name,
                            format!("padding of axis {i} is negative ({p}); use slice to crop"),
                        ));
                    }
                }
                dims.push(lo.clone() + x.shape[i].clone() + hi.clone());
            }
            Ok(TensorType::new(x.dtype, Shape(dims)))
        }
        Op::Concat { axis } => {
            let first = ins[0];
            plain(name, ins)?;
            check_axis(name, *axis, first)?;
            if ins.iter().any(|t| t.dtype != first.dtype) {
                return Err(IrError::dtype(
                    name,
                    ins,
                    "the same dtype for every operand",
                ));
            }
            let same_other_dims = ins.iter().all(|t| {
                t.rank() == first.rank()
                    && (0..t.rank()).all(|i| i == *axis || t.shape[i] == first.shape[i])
            });
            if !same_other_dims {
                return Err(IrError::shape(
                    name,
                    ins,
                    format!("the same rank and equal dims on every axis but {axis}"),
                ));
            }
            let mut dims = first.shape.0.clone();
            dims[*axis] = ins
                .iter()
                .fold(Dim::constant(0), |acc, t| acc + t.shape[*axis].clone());
            Ok(TensorType::new(first.dtype, Shape(dims)))
        }
        Op::Flip { axes } => {
            plain(name, ins)?;
            check_axes(name, axes, ins[0])?;
            Ok(ins[0].clone())
        }
        Op::IndexSelect { axis } => {
            let (x, idx) = (ins[0], ins[1]);
            check_axis(name, *axis, x)?;
            index_dtype(name, ins, idx)?;
            if let DType::Quant(q) = x.dtype {
                if *axis + 1 == x.rank() {
                    return Err(IrError::dtype(
                        name,
                        ins,
                        format!("an axis other than the last for a {q} operand (its blocks run along the last axis)"),
                    ));
                }
            }
            if idx.rank() != 1 {
                return Err(IrError::shape(name, ins, "rank-1 indices"));
            }
            let mut dims = x.shape.0.clone();
            dims[*axis] = idx.shape[0].clone();
            Ok(TensorType::new(x.dtype, Shape(dims)))
        }
        Op::Gather { axis } => {
            let (x, idx) = (ins[0], ins[1]);
            plain(name, &ins[..1])?;
            check_axis(name, *axis, x)?;
            index_dtype(name, ins, idx)?;
            let fits = idx.rank() == x.rank()
                && (0..x.rank()).all(|i| {
                    i == *axis
                        || match (idx.shape[i].as_const(), x.shape[i].as_const()) {
                            (Some(a), Some(b)) => a <= b,
                            _ => true,
                        }
                });
            if !fits {
                return Err(IrError::shape(
                    name,
                    ins,
                    format!(
                        "indices of the same rank as the operand, no larger on any axis but {axis}"
                    ),
                ));
            }
            Ok(TensorType::new(x.dtype, idx.shape.clone()))
        }
        Op::Scatter { axis, reduce } => {
            let (dst, idx, src) = (ins[0], ins[1], ins[2]);
            plain(name, &[dst, src])?;
            check_axis(name, *axis, dst)?;
            index_dtype(name, ins, idx)?;
            if src.dtype != dst.dtype || (*reduce == ScatterReduce::Add && dst.dtype == DType::Bool)
            {
                return Err(IrError::dtype(
                    name,
                    ins,
                    "source of the destination's dtype (numeric for scatter add)",
                ));
            }
            if idx.shape != src.shape || idx.rank() != dst.rank() {
                return Err(IrError::shape(
                    name,
                    ins,
                    "indices and source of the same shape, with the destination's rank",
                ));
            }
            Ok(dst.clone())
        }
        Op::SliceUpdate { axis, start } => {
            let (dst, src) = (ins[0], ins[1]);
            plain(name, ins)?;
            check_axis(name, *axis, dst)?;
            if src.dtype != dst.dtype {
                return Err(IrError::dtype(
                    name,
                    ins,
                    "source of the destination's dtype",
                ));
            }
            let dims_fit = src.rank() == dst.rank()
                && (0..dst.rank()).all(|i| i == *axis || src.shape[i] == dst.shape[i]);
            if !dims_fit {
                return Err(IrError::shape(
                    name,
                    ins,
                    format!("source with the destination's rank and dims on every axis but {axis}"),
                ));
            }
            let end = start.clone() + src.shape[*axis].clone();
            check_range(name, ins, start, &end, &dst.shape[*axis])?;
            Ok(dst.clone())
        }
        Op::MatMul { trans_a, trans_b } => matmul(name, *trans_a, *trans_b, ins[0], ins[1]),
    }
}

fn arity(op: &Op, name: &str, got: usize) -> Result<(), IrError> {
    let expected = match op {
        _ if op.is_source() => 0,
        Op::Unary(_) | Op::Cast { .. } | Op::Reduce { .. } | Op::Reshape { .. } => 1,
        Op::Permute { .. } | Op::Expand { .. } | Op::Slice { .. } | Op::Pad { .. } => 1,
        Op::Flip { .. } => 1,
        Op::Binary(_) | Op::IndexSelect { .. } | Op::Gather { .. } => 2,
        Op::SliceUpdate { .. } | Op::MatMul { .. } => 2,
        Op::Where | Op::Scatter { .. } => 3,
        Op::Concat { .. } => {
            return if got >= 1 {
                Ok(())
            } else {
                Err(IrError::Arity {
                    op: name.into(),
                    expected: "at least 1".into(),
                    got,
                })
            }
        }
        _ => 0,
    };
    if got == expected {
        Ok(())
    } else {
        Err(IrError::Arity {
            op: name.into(),
            expected: expected.to_string(),
            got,
        })
    }
}

/// Constant dims must be non-negative.
fn check_shape(name: &str, shape: &Shape) -> Result<(), IrError> {
    match shape
        .dims()
        .iter()
        .find(|d| d.as_const().is_some_and(|v| v < 0))
    {
        Some(d) => Err(IrError::attr(
            name,
            format!("shape {shape} has a negative dim ({d})"),
        )),
        None => Ok(()),
    }
}

/// A block-quantized tensor needs a constant last dim that is a whole number of blocks.
fn check_blocks(name: &str, dtype: DType, shape: &Shape) -> Result<(), IrError> {
    let Some(q) = dtype.quant() else {
        return Ok(());
    };
    let last = shape.dims().last().and_then(Dim::as_const);
    match last {
        Some(n) if n % q.block_size() as i64 == 0 => Ok(()),
        _ => Err(IrError::attr(
            name,
            format!(
                "a {q} tensor needs a constant last dim that is a multiple of its block size {}, shape is {shape}",
                q.block_size()
            ),
        )),
    }
}

fn check_value(name: &str, value: Scalar, dtype: DType) -> Result<(), IrError> {
    if value.fits(dtype) {
        Ok(())
    } else {
        Err(IrError::attr(
            name,
            format!("value {value} does not fit dtype {dtype}"),
        ))
    }
}

fn not_quantized_attr(name: &str, dtype: DType) -> Result<(), IrError> {
    if dtype.is_quantized() {
        Err(IrError::attr(
            name,
            format!("cannot produce block-quantized dtype {dtype}; quantization is not an IR op"),
        ))
    } else {
        Ok(())
    }
}

/// Rejects block-quantized operands (they may only be cast, multiplied or row-selected).
fn plain(name: &str, ins: &[&TensorType]) -> Result<(), IrError> {
    if ins.iter().any(|t| t.dtype.is_quantized()) {
        return Err(IrError::dtype(
            name,
            ins,
            "no block-quantized operand (cast it to a float type first)",
        ));
    }
    Ok(())
}

fn check_axis(name: &str, axis: usize, x: &TensorType) -> Result<(), IrError> {
    if axis < x.rank() {
        Ok(())
    } else {
        Err(IrError::Axis {
            op: name.into(),
            axis,
            rank: x.rank(),
            operand: x.clone(),
        })
    }
}

fn check_axes(name: &str, axes: &[usize], x: &TensorType) -> Result<(), IrError> {
    for &a in axes {
        check_axis(name, a, x)?;
    }
    if axes.windows(2).any(|w| w[0] >= w[1]) {
        return Err(IrError::attr(
            name,
            format!("axes {axes:?} must be sorted and without duplicates"),
        ));
    }
    Ok(())
}

/// `0 <= start <= end <= size`, checked wherever the differences are constants.
fn check_range(
    name: &str,
    ins: &[&TensorType],
    start: &Dim,
    end: &Dim,
    size: &Dim,
) -> Result<(), IrError> {
    let bad = start.as_const().is_some_and(|s| s < 0)
        || (end.clone() - start.clone())
            .as_const()
            .is_some_and(|d| d < 0)
        || (size.clone() - end.clone())
            .as_const()
            .is_some_and(|d| d < 0);
    if bad {
        return Err(IrError::shape(
            name,
            ins,
            format!("0 <= start ({start}) <= end ({end}) <= size ({size})"),
        ));
    }
    Ok(())
}

fn index_dtype(name: &str, ins: &[&TensorType], idx: &TensorType) -> Result<(), IrError> {
    if idx.dtype.is_int() {
        Ok(())
    } else {
        Err(IrError::dtype(
            name,
            ins,
            format!("integer indices, not {}", idx.dtype),
        ))
    }
}

fn unary(name: &str, u: UnaryOp, x: &TensorType) -> Result<TensorType, IrError> {
    let d = x.dtype;
    let ok = match u {
        _ if d.is_quantized() => false,
        _ if u.float_only() => d.is_float(),
        UnaryOp::Neg => d.is_float() || d.is_signed_int(),
        UnaryOp::Abs | UnaryOp::Sign => d.is_float() || d.is_int(),
        UnaryOp::Not => d.is_int() || d.is_bool(),
        _ => false,
    };
    if !ok {
        let want = match u {
            _ if u.float_only() => "a float dtype",
            UnaryOp::Neg => "a float or signed integer dtype",
            UnaryOp::Not => "a bool or integer dtype",
            _ => "a float or integer dtype",
        };
        return Err(IrError::dtype(name, &[x], want));
    }
    Ok(x.clone())
}

fn binary(name: &str, b: BinaryOp, x: &TensorType, y: &TensorType) -> Result<TensorType, IrError> {
    if x.dtype != y.dtype || x.dtype.is_quantized() {
        return Err(IrError::dtype(
            name,
            &[x, y],
            "operands of the same dtype (cast one first)",
        ));
    }
    let d = x.dtype;
    let (ok, want) = match b {
        _ if b.is_comparison() => (true, ""),
        _ if b.is_logical() => (d.is_int() || d.is_bool(), "a bool or integer dtype"),
        BinaryOp::Pow => (d.is_float(), "a float dtype"),
        _ => (d.is_int() || d.is_float(), "a float or integer dtype"),
    };
    if !ok {
        return Err(IrError::dtype(name, &[x, y], want));
    }
    if x.shape != y.shape {
        return Err(IrError::shape(
            name,
            &[x, y],
            "identical shapes (broadcast first with expand)",
        ));
    }
    let out = if b.is_comparison() { DType::Bool } else { d };
    Ok(TensorType::new(out, x.shape.clone()))
}

fn reduce(
    name: &str,
    op: ReduceOp,
    axes: &[usize],
    keepdim: bool,
    x: &TensorType,
) -> Result<TensorType, IrError> {
    if !(x.dtype.is_float() || x.dtype.is_int()) {
        return Err(IrError::dtype(name, &[x], "a float or integer dtype"));
    }
    if axes.is_empty() {
        return Err(IrError::attr(name, "needs at least one axis"));
    }
    check_axes(name, axes, x)?;
    if op == ReduceOp::ArgMax && axes.len() != 1 {
        return Err(IrError::attr(
            name,
            format!("argmax reduces exactly one axis, got {axes:?}"),
        ));
    }
    let mut dims = Vec::with_capacity(x.rank());
    for (i, d) in x.shape.dims().iter().enumerate() {
        if !axes.contains(&i) {
            dims.push(d.clone());
        } else if keepdim {
            dims.push(Dim::constant(1));
        }
    }
    let dtype = if op == ReduceOp::ArgMax {
        DType::I64
    } else {
        x.dtype
    };
    Ok(TensorType::new(dtype, Shape(dims)))
}

/// Rank of a float type for mixed-precision matmul: wider wins.
fn float_rank(d: DType) -> u8 {
    match d {
        DType::F64 => 3,
        DType::F32 => 2,
        _ => 1,
    }
}

fn matmul(
    name: &str,
    trans_a: bool,
    trans_b: bool,
    a: &TensorType,
    b: &TensorType,
) -> Result<TensorType, IrError> {
    let ins = [a, b];
    if a.rank() < 2 || b.rank() < 2 {
        return Err(IrError::shape(
            name,
            &ins,
            "operands of rank 2 or more (unsqueeze vectors first)",
        ));
    }
    let dtype = match (a.dtype, b.dtype) {
        (DType::Quant(_), DType::Quant(_)) => None,
        (DType::Quant(q), other) | (other, DType::Quant(q)) => {
            let bad_layout =
                (a.dtype.is_quantized() && trans_a) || (b.dtype.is_quantized() && !trans_b);
            if bad_layout {
                return Err(IrError::dtype(
                    name,
                    &ins,
                    format!("a {q} operand stored with its blocks along k: b as [.., n, k] with trans_b, or a as [.., m, k] without trans_a"),
                ));
            }
            other.is_float().then_some(other)
        }
        (x, y) if x == y && (x.is_float() || x.is_int()) => Some(x),
        (x, y) if x.is_float() && y.is_float() => Some(match float_rank(x).cmp(&float_rank(y)) {
            std::cmp::Ordering::Greater => x,
            std::cmp::Ordering::Less => y,
            std::cmp::Ordering::Equal => DType::F32, // f16 with bf16
        }),
        _ => None,
    };
    let Some(dtype) = dtype else {
        return Err(IrError::dtype(
            name,
            &ins,
            "two float operands (f16/bf16/f32/f64, one may be block-quantized) or two integer operands of the same dtype",
        ));
    };
    let (ra, rb) = (a.rank(), b.rank());
    let (m, ka) = if trans_a {
        (&a.shape[ra - 1], &a.shape[ra - 2])
    } else {
        (&a.shape[ra - 2], &a.shape[ra - 1])
    };
    let (kb, n) = if trans_b {
        (&b.shape[rb - 1], &b.shape[rb - 2])
    } else {
        (&b.shape[rb - 2], &b.shape[rb - 1])
    };
    if ka != kb {
        return Err(IrError::shape(
            name,
            &ins,
            format!(
                "equal contraction dims (k = {ka} vs {kb}, trans_a={trans_a}, trans_b={trans_b})"
            ),
        ));
    }
    let batch_a = Shape(a.shape.0[..ra - 2].to_vec());
    let batch_b = Shape(b.shape.0[..rb - 2].to_vec());
    let Some(batch) = broadcast_shapes(&batch_a, &batch_b) else {
        return Err(IrError::shape(
            name,
            &ins,
            format!("batch dims that broadcast ({batch_a} vs {batch_b})"),
        ));
    };
    let mut dims = batch.0;
    dims.push(m.clone());
    dims.push(n.clone());
    Ok(TensorType::new(dtype, Shape(dims)))
}
