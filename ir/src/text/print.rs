//! Printing graphs in the text format.

use crate::dim::Dim;
use crate::dtype::Scalar;
use crate::graph::{Graph, Node};
use crate::op::Op;
use crate::quant::QuantType;
use crate::tensor::{Storage, Tensor};
use half::{bf16, f16};
use std::fmt::{self, Display, Write};

impl Display for Graph {
    /// Prints the graph in the text format that [`crate::parse_graph`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("graph {\n")?;
        for (i, node) in self.nodes().iter().enumerate() {
            write!(f, "  %{i} = ")?;
            write_node(f, node)?;
            writeln!(f, " : {}", node.ty)?;
        }
        for (name, id) in self.outputs() {
            writeln!(f, "  output {} = {id}", Quoted(name))?;
        }
        for (name, id) in self.state_updates() {
            writeln!(f, "  state_update {} = {id}", Quoted(name))?;
        }
        f.write_str("}")
    }
}

/// Writes a node's op, operands and attributes (everything between `=` and `:`).
fn write_node(f: &mut fmt::Formatter<'_>, node: &Node) -> fmt::Result {
    f.write_str(&node.op.name())?;
    match &node.op {
        Op::Input { name, .. } | Op::Param { name, .. } | Op::State { name, .. } => {
            write!(f, " {}", Quoted(name))?;
        }
        Op::Full { value, .. } => write!(f, " {}", ScalarLit(*value))?,
        Op::Constant { value } => {
            f.write_str(" ")?;
            write_tensor(f, value)?;
        }
        _ => {}
    }
    for (i, id) in node.inputs.iter().enumerate() {
        f.write_str(if i == 0 { " " } else { ", " })?;
        write!(f, "{id}")?;
    }
    match &node.op {
        Op::Input { .. }
        | Op::Param { .. }
        | Op::State { .. }
        | Op::Full { .. }
        | Op::Constant { .. }
        | Op::Unary(_)
        | Op::Binary(_)
        | Op::Where => Ok(()),
        Op::Iota { axis, .. }
        | Op::Concat { axis }
        | Op::IndexSelect { axis }
        | Op::Gather { axis } => write!(f, " axis={axis}"),
        Op::Cast { to } => write!(f, " to={to}"),
        Op::DimValue { dim, .. } => write!(f, " dim={}", DimAttr(dim)),
        Op::Reduce { axes, keepdim, .. } => {
            write!(f, " axes=")?;
            write_list(f, axes)?;
            if *keepdim {
                f.write_str(" keepdim")?;
            }
            Ok(())
        }
        Op::Reshape { shape } | Op::Expand { shape } => write!(f, " shape={shape}"),
        Op::Permute { perm } => {
            f.write_str(" perm=")?;
            write_list(f, perm)
        }
        Op::Slice {
            axis,
            start,
            end,
            step,
        } => write!(
            f,
            " axis={axis} start={} end={} step={step}",
            DimAttr(start),
            DimAttr(end)
        ),
        Op::Pad { pads, value } => {
            f.write_str(" pads=[")?;
            for (i, (lo, hi)) in pads.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "({lo}, {hi})")?;
            }
            write!(f, "] value={}", ScalarLit(*value))
        }
        Op::Flip { axes } => {
            f.write_str(" axes=")?;
            write_list(f, axes)
        }
        Op::Scatter { axis, reduce } => write!(f, " axis={axis} reduce={}", reduce.name()),
        Op::SliceUpdate { axis, start } => write!(f, " axis={axis} start={}", DimAttr(start)),
        Op::MatMul { trans_a, trans_b } => {
            if *trans_a {
                f.write_str(" trans_a")?;
            }
            if *trans_b {
                f.write_str(" trans_b")?;
            }
            Ok(())
        }
    }
}

fn write_list(f: &mut fmt::Formatter<'_>, items: &[usize]) -> fmt::Result {
    f.write_str("[")?;
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{x}")?;
    }
    f.write_str("]")
}

/// A string in double quotes, with `\\`, `\"`, `\n`, `\r`, `\t` and `\u{..}` (other control
/// characters) escaped. Everything else, unicode included, is printed as is.
pub(super) struct Quoted<'a>(pub &'a str);

impl Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

/// A dimension used as a scalar attribute: bare if it is a single word (`seq`, `-1`),
/// otherwise in parentheses (`(seq - 1)`, `(min(seq, 128))`).
struct DimAttr<'a>(&'a Dim);

impl Display for DimAttr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.to_string();
        let bare = s
            .char_indices()
            .all(|(i, c)| c.is_ascii_alphanumeric() || c == '_' || (i == 0 && c == '-'));
        if bare {
            f.write_str(&s)
        } else {
            write!(f, "({s})")
        }
    }
}

/// A scalar attribute: `1` (integer), `1.0` (float), `true`, `-inf`, `nan`.
pub(super) struct ScalarLit(pub Scalar);

impl Display for ScalarLit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Scalar::Float(v) => f.write_str(&fmt_f64(v)),
            Scalar::Int(v) => write!(f, "{v}"),
            Scalar::Bool(v) => write!(f, "{v}"),
        }
    }
}

/// `nan` for the canonical NaN, `nan(0xBITS)` for any other NaN (full bit pattern).
fn fmt_nan(bits: u64, canonical: u64, hex_digits: usize) -> String {
    if bits == canonical {
        "nan".into()
    } else {
        format!("nan(0x{bits:0hex_digits$x})")
    }
}

/// The shortest decimal that reads back as the same f64; `nan`, `inf`, `-inf`.
pub(super) fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        fmt_nan(v.to_bits(), f64::NAN.to_bits(), 16)
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        format!("{v:?}")
    }
}

/// The shortest decimal that reads back as the same f32.
pub(super) fn fmt_f32(v: f32) -> String {
    if v.is_nan() {
        fmt_nan(v.to_bits().into(), f32::NAN.to_bits().into(), 8)
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        format!("{v:?}")
    }
}

/// The shortest decimal `s` such that rounding `s` to f64 and then to the 16-bit type gives
/// back `bits` (the parser reads 16-bit floats exactly that way).
fn fmt_half(value: f64, bits: u16, canonical_nan: u16, back: impl Fn(f64) -> u16) -> String {
    if value.is_nan() {
        return fmt_nan(bits.into(), canonical_nan.into(), 4);
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.into();
    }
    for precision in 0..17 {
        let s = format!("{value:.precision$e}");
        if let Ok(r) = s.parse::<f64>() {
            if back(r) == bits {
                // `r` has at most 17 significant digits, so its shortest repr is `s`'s value.
                return format!("{r:?}");
            }
        }
    }
    format!("{value:?}")
}

pub(super) fn fmt_f16(v: f16) -> String {
    fmt_half(v.to_f64(), v.to_bits(), f16::NAN.to_bits(), |r| {
        f16::from_f64(r).to_bits()
    })
}

pub(super) fn fmt_bf16(v: bf16) -> String {
    fmt_half(v.to_f64(), v.to_bits(), bf16::NAN.to_bits(), |r| {
        bf16::from_f64(r).to_bits()
    })
}

/// A constant's data: nested lists by axis (`[[1.0, 2.0], [3.0, 4.0]]`), a bare value for
/// rank 0, or for block-quantized data the raw bytes in hex with blocks separated by `_`.
fn write_tensor(f: &mut fmt::Formatter<'_>, t: &Tensor) -> fmt::Result {
    let elems: Vec<String> = match t.storage() {
        Storage::Quant(q, bytes) => return write_hex(f, *q, bytes),
        Storage::F32(v) => v.iter().map(|&x| fmt_f32(x)).collect(),
        Storage::F16(v) => v.iter().map(|&x| fmt_f16(x)).collect(),
        Storage::BF16(v) => v.iter().map(|&x| fmt_bf16(x)).collect(),
        Storage::F64(v) => v.iter().map(|&x| fmt_f64(x)).collect(),
        Storage::I8(v) => v.iter().map(ToString::to_string).collect(),
        Storage::I16(v) => v.iter().map(ToString::to_string).collect(),
        Storage::I32(v) => v.iter().map(ToString::to_string).collect(),
        Storage::I64(v) => v.iter().map(ToString::to_string).collect(),
        Storage::U8(v) => v.iter().map(ToString::to_string).collect(),
        Storage::U32(v) => v.iter().map(ToString::to_string).collect(),
        Storage::Bool(v) => v.iter().map(ToString::to_string).collect(),
    };
    let shape = t.shape();
    if shape.is_empty() {
        return f.write_str(elems.first().map_or("", String::as_str));
    }
    if elems.is_empty() {
        // Some axis is 0: print the nesting down to the first empty axis.
        let zero = shape.iter().position(|&n| n == 0).unwrap_or(0);
        return write_empty(f, &shape[..=zero]);
    }
    // sizes[d]: elements in one list at depth d; such a list starts every sizes[d] elements.
    let mut sizes = vec![1usize; shape.len()];
    let mut size = 1;
    for d in (0..shape.len()).rev() {
        size *= shape[d];
        sizes[d] = size;
    }
    for (i, e) in elems.iter().enumerate() {
        // Lists that end before element i and start at it.
        let boundaries = sizes.iter().filter(|&&s| i % s == 0).count();
        if i > 0 {
            for _ in 0..boundaries {
                f.write_str("]")?;
            }
            f.write_str(", ")?;
        }
        for _ in 0..boundaries {
            f.write_str("[")?;
        }
        f.write_str(e)?;
    }
    for _ in 0..shape.len() {
        f.write_str("]")?;
    }
    Ok(())
}

/// Nested lists for a shape whose last axis (in `shape`) is 0: `[[], []]` for `[2, 0, ..]`.
fn write_empty(f: &mut fmt::Formatter<'_>, shape: &[usize]) -> fmt::Result {
    match shape.split_first() {
        None => Ok(()),
        Some((&n, rest)) => {
            f.write_str("[")?;
            if !rest.is_empty() {
                for i in 0..n {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write_empty(f, rest)?;
                }
            }
            f.write_str("]")
        }
    }
}

fn write_hex(f: &mut fmt::Formatter<'_>, q: QuantType, bytes: &[u8]) -> fmt::Result {
    f.write_str("0x")?;
    for (i, block) in bytes.chunks(q.block_bytes()).enumerate() {
        if i > 0 {
            f.write_str("_")?;
        }
        for b in block {
            write!(f, "{b:02x}")?;
        }
    }
    Ok(())
}
