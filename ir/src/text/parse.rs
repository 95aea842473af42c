//! Reading graphs back from the text format.

use super::lex::{inner, parse_dim, split_top_level, Cursor};
use super::{ParseError, ParseErrorKind};
use crate::dtype::{DType, Scalar};
use crate::error::IrError;
use crate::graph::{Graph, NodeId};
use crate::op::{BinaryOp, Op, ReduceOp, ScatterReduce, UnaryOp};
use crate::shape::{Shape, TensorType};
use crate::tensor::{Storage, Tensor};
use half::{bf16, f16};
use std::sync::Arc;

/// Parses a graph printed by `Graph`'s `Display` (see the [module docs](super) for the
/// grammar).
///
/// Every node is added with [`Graph::push`], so types are inferred again and checked against
/// the `: type` written on each line. Never panics: any malformed input gives a
/// [`ParseError`] with its line and column.
pub fn parse_graph(text: &str) -> Result<Graph, ParseError> {
    enum State {
        Header,
        Body,
        Done,
    }
    let mut graph = Graph::new();
    let mut state = State::Header;
    let mut last = (1, "");
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        last = (i + 1, line);
        let mut c = Cursor::new(line, i + 1);
        if c.at_end() {
            continue;
        }
        match state {
            State::Header => {
                header(&mut c)?;
                state = State::Body;
            }
            State::Body => {
                if body_line(&mut graph, &mut c)? {
                    state = State::Done;
                }
            }
            State::Done => {
                return Err(c.syntax(c.pos, "unexpected text after the closing `}` of the graph"))
            }
        }
    }
    let c = Cursor::new(last.1, last.0);
    let end = last.1.len();
    match state {
        State::Header => Err(c.syntax(end, "expected `graph {`, found the end of the input")),
        State::Body => Err(c.syntax(end, "missing the closing `}` of the graph")),
        State::Done => Ok(graph),
    }
}

fn header(c: &mut Cursor<'_>) -> Result<(), ParseError> {
    c.skip_ws();
    let at = c.pos;
    if !matches!(c.ident(), Some((_, "graph"))) {
        return Err(c.syntax(at, "expected `graph {`"));
    }
    c.expect('{', "`{` after `graph`")?;
    end_of_line(c)
}

fn end_of_line(c: &mut Cursor<'_>) -> Result<(), ParseError> {
    if c.at_end() {
        Ok(())
    } else {
        Err(c.syntax(
            c.pos,
            format!("unexpected {} at the end of the line", c.found()),
        ))
    }
}

/// One line inside `graph { ... }`; true for the closing `}`.
fn body_line(g: &mut Graph, c: &mut Cursor<'_>) -> Result<bool, ParseError> {
    c.skip_ws();
    let at = c.pos;
    match c.peek() {
        Some('}') => {
            c.pos += 1;
            end_of_line(c)?;
            Ok(true)
        }
        Some('%') => node_line(g, c).map(|()| false),
        _ => match c.ident() {
            Some((_, kw @ ("output" | "state_update"))) => {
                target_line(g, c, kw == "output").map(|()| false)
            }
            _ => {
                c.pos = at;
                Err(c.syntax(
                    at,
                    format!(
                        "expected a node `%N = ...`, `output`, `state_update` or `}}`, found {}",
                        c.found()
                    ),
                ))
            }
        },
    }
}

/// `output "name" = %N` or `state_update "name" = %N` (the keyword already read).
fn target_line(g: &mut Graph, c: &mut Cursor<'_>, output: bool) -> Result<(), ParseError> {
    let (name_at, name) = c.string("a quoted name")?;
    c.expect('=', "`=`")?;
    let (id_at, id) = c.node_ref()?;
    end_of_line(c)?;
    check_defined(g, c, id_at, id)?;
    let result = if output {
        g.set_output(&name, NodeId(id))
    } else {
        g.set_state_update(&name, NodeId(id))
    };
    result.map_err(|e| {
        let at = if matches!(e, IrError::StateType { .. }) {
            id_at
        } else {
            name_at
        };
        c.error(at, ParseErrorKind::Ir(e))
    })
}

fn check_defined(g: &Graph, c: &Cursor<'_>, at: usize, id: u32) -> Result<(), ParseError> {
    let defined = g.nodes().len();
    if (id as usize) < defined {
        Ok(())
    } else {
        Err(c.error(at, ParseErrorKind::UndefinedNode { id, defined }))
    }
}

/// The ops, by the name they have in the text.
#[derive(Clone, Copy)]
enum Kind {
    Input,
    Param,
    State,
    Full,
    Constant,
    Iota,
    DimValue,
    Unary(UnaryOp),
    Binary(BinaryOp),
    Where,
    Cast,
    Reduce(ReduceOp),
    Reshape,
    Permute,
    Expand,
    Slice,
    Pad,
    Concat,
    Flip,
    IndexSelect,
    Gather,
    Scatter,
    SliceUpdate,
    MatMul,
}

impl Kind {
    fn from_name(name: &str) -> Option<Kind> {
        Some(match name {
            "input" => Kind::Input,
            "param" => Kind::Param,
            "state" => Kind::State,
            "full" => Kind::Full,
            "constant" => Kind::Constant,
            "iota" => Kind::Iota,
            "dim_value" => Kind::DimValue,
            "where" => Kind::Where,
            "cast" => Kind::Cast,
            "reshape" => Kind::Reshape,
            "permute" => Kind::Permute,
            "expand" => Kind::Expand,
            "slice" => Kind::Slice,
            "pad" => Kind::Pad,
            "concat" => Kind::Concat,
            "flip" => Kind::Flip,
            "index_select" => Kind::IndexSelect,
            "gather" => Kind::Gather,
            "scatter" => Kind::Scatter,
            "slice_update" => Kind::SliceUpdate,
            "matmul" => Kind::MatMul,
            _ => {
                if let Some(r) = name.strip_prefix("reduce.") {
                    return ReduceOp::ALL
                        .into_iter()
                        .find(|o| o.name() == r)
                        .map(Kind::Reduce);
                }
                if let Some(u) = UnaryOp::ALL.into_iter().find(|o| o.name() == name) {
                    return Some(Kind::Unary(u));
                }
                return BinaryOp::ALL
                    .into_iter()
                    .find(|o| o.name() == name)
                    .map(Kind::Binary);
            }
        })
    }

    /// The attributes (`key=value` or flags) the op takes.
    fn attributes(self) -> &'static [&'static str] {
        match self {
            Kind::Input
            | Kind::Param
            | Kind::State
            | Kind::Full
            | Kind::Constant
            | Kind::Unary(_)
            | Kind::Binary(_)
            | Kind::Where => &[],
            Kind::Iota | Kind::Concat | Kind::IndexSelect | Kind::Gather => &["axis"],
            Kind::Cast => &["to"],
            Kind::DimValue => &["dim"],
            Kind::Reduce(_) => &["axes", "keepdim"],
            Kind::Reshape | Kind::Expand => &["shape"],
            Kind::Permute => &["perm"],
            Kind::Slice => &["axis", "start", "end", "step"],
            Kind::Pad => &["pads", "value"],
            Kind::Flip => &["axes"],
            Kind::Scatter => &["axis", "reduce"],
            Kind::SliceUpdate => &["axis", "start"],
            Kind::MatMul => &["trans_a", "trans_b"],
        }
    }
}

/// One `key=value` or `flag` attribute.
struct Attr<'a> {
    key_at: usize,
    key: &'a str,
    value: Option<(usize, &'a str)>,
}

/// A node's attributes, checked against what its op takes.
struct Attrs<'a> {
    op: &'a str,
    list: Vec<Attr<'a>>,
    /// Where the attributes end (for "missing attribute" errors).
    end: usize,
}

impl<'a> Attrs<'a> {
    /// Reads attributes up to the `:` before the type.
    fn read(c: &mut Cursor<'a>, op: &'a str, kind: Kind) -> Result<Attrs<'a>, ParseError> {
        let allowed = kind.attributes();
        let mut list: Vec<Attr<'a>> = Vec::new();
        loop {
            if c.at_end() || c.peek() == Some(':') {
                break;
            }
            let at = c.pos;
            let Some((key_at, key)) = c.ident() else {
                return Err(c.syntax(
                    at,
                    format!(
                        "expected an attribute or `:` and the type, found {}",
                        c.found()
                    ),
                ));
            };
            if !allowed.contains(&key) {
                let takes = if allowed.is_empty() {
                    "it takes none".to_string()
                } else {
                    format!("it takes {}", allowed.join(", "))
                };
                return Err(c.syntax(
                    key_at,
                    format!("`{key}` is not an attribute of {op} ({takes})"),
                ));
            }
            if list.iter().any(|a| a.key == key) {
                return Err(c.syntax(key_at, format!("attribute `{key}` is given twice")));
            }
            let value = if c.eat('=') {
                c.skip_ws();
                let v = if matches!(c.peek(), Some('[' | '(')) {
                    c.group()?
                } else {
                    c.word()
                };
                if v.1.is_empty() {
                    return Err(c.syntax(v.0, format!("expected a value for `{key}`")));
                }
                Some(v)
            } else {
                None
            };
            list.push(Attr { key_at, key, value });
        }
        c.skip_ws();
        Ok(Attrs {
            op,
            list,
            end: c.pos,
        })
    }

    /// The value of a required `key=value` attribute.
    fn value(&self, c: &Cursor<'_>, key: &str) -> Result<(usize, &'a str), ParseError> {
        match self.list.iter().find(|a| a.key == key) {
            Some(Attr { value: Some(v), .. }) => Ok(*v),
            Some(a) => Err(c.syntax(a.key_at, format!("`{key}` needs a value: `{key}=...`"))),
            None => Err(c.syntax(
                self.end,
                format!("{} needs the attribute `{key}=...`", self.op),
            )),
        }
    }

    /// Whether a flag is present.
    fn flag(&self, c: &Cursor<'_>, key: &str) -> Result<bool, ParseError> {
        match self.list.iter().find(|a| a.key == key) {
            Some(Attr {
                value: Some((at, _)),
                ..
            }) => Err(c.syntax(*at, format!("`{key}` is a flag and takes no value"))),
            Some(_) => Ok(true),
            None => Ok(false),
        }
    }

    fn axis(&self, c: &Cursor<'_>) -> Result<usize, ParseError> {
        let (at, v) = self.value(c, "axis")?;
        usize_value(c, at, v)
    }
}

/// What comes right after a source op's name.
enum Positional<'a> {
    None,
    Name(String),
    Value(usize, &'a str),
}

/// `%N = op [positional] [operands] [attributes] : type`
fn node_line(g: &mut Graph, c: &mut Cursor<'_>) -> Result<(), ParseError> {
    let (id_at, id) = c.node_ref()?;
    let expected = g.nodes().len();
    if id as usize != expected {
        return Err(c.error(
            id_at,
            ParseErrorKind::NodeOrder {
                expected,
                found: id,
            },
        ));
    }
    c.expect('=', "`=` after the node id")?;
    c.skip_ws();
    let op_at = c.pos;
    let Some((_, op_name)) = c.ident() else {
        return Err(c.syntax(op_at, format!("expected an op name, found {}", c.found())));
    };
    let Some(kind) = Kind::from_name(op_name) else {
        return Err(c.error(op_at, ParseErrorKind::UnknownOp(op_name.to_string())));
    };
    let positional = match kind {
        Kind::Input | Kind::Param | Kind::State => Positional::Name(c.string("a quoted name")?.1),
        Kind::Full | Kind::Constant => {
            c.skip_ws();
            let (at, v) = if matches!(kind, Kind::Constant) && c.peek() == Some('[') {
                c.group()?
            } else {
                c.word()
            };
            if v.is_empty() {
                return Err(c.syntax(at, format!("expected a value, found {}", c.found())));
            }
            Positional::Value(at, v)
        }
        _ => Positional::None,
    };
    let mut operands = Vec::new();
    c.skip_ws();
    if c.peek() == Some('%') {
        loop {
            operands.push(c.node_ref()?);
            if !c.eat(',') {
                break;
            }
        }
    }
    let attrs = Attrs::read(c, op_name, kind)?;
    c.expect(':', "`:` and the node's type")?;
    c.skip_ws();
    let ty_at = c.pos;
    let ty = tensor_type(c)?;
    end_of_line(c)?;

    for &(at, id) in &operands {
        check_defined(g, c, at, id)?;
    }
    let op = build_op(c, kind, positional, &attrs, &ty, ty_at)?;
    let inputs = operands.iter().map(|&(_, id)| NodeId(id)).collect();
    let node = g
        .push(op, inputs)
        .map_err(|e| c.error(op_at, ParseErrorKind::Ir(e)))?;
    let inferred = g.ty(node);
    if *inferred != ty {
        return Err(c.error(
            ty_at,
            ParseErrorKind::TypeMismatch {
                annotated: ty,
                inferred: inferred.clone(),
            },
        ));
    }
    Ok(())
}

fn build_op(
    c: &Cursor<'_>,
    kind: Kind,
    positional: Positional<'_>,
    attrs: &Attrs<'_>,
    ty: &TensorType,
    ty_at: usize,
) -> Result<Op, ParseError> {
    let (dtype, shape) = (ty.dtype, ty.shape.clone());
    Ok(match (kind, positional) {
        (Kind::Input, Positional::Name(name)) => Op::Input { name, dtype, shape },
        (Kind::Param, Positional::Name(name)) => Op::Param { name, dtype, shape },
        (Kind::State, Positional::Name(name)) => Op::State { name, dtype, shape },
        (Kind::Full, Positional::Value(at, v)) => Op::Full {
            value: scalar_value(c, at, v)?,
            dtype,
            shape,
        },
        (Kind::Constant, Positional::Value(at, v)) => Op::Constant {
            value: Arc::new(dense(c, at, v, ty, ty_at)?),
        },
        (Kind::Iota, _) => Op::Iota {
            axis: attrs.axis(c)?,
            dtype,
            shape,
        },
        (Kind::DimValue, _) => {
            let (at, v) = attrs.value(c, "dim")?;
            Op::DimValue {
                dim: parse_dim(c, at, v)?,
                dtype,
            }
        }
        (Kind::Unary(u), _) => Op::Unary(u),
        (Kind::Binary(b), _) => Op::Binary(b),
        (Kind::Where, _) => Op::Where,
        (Kind::Cast, _) => {
            let (at, v) = attrs.value(c, "to")?;
            Op::Cast {
                to: dtype_value(c, at, v)?,
            }
        }
        (Kind::Reduce(op), _) => {
            let (at, v) = attrs.value(c, "axes")?;
            Op::Reduce {
                op,
                axes: usize_list(c, at, v)?,
                keepdim: attrs.flag(c, "keepdim")?,
            }
        }
        (Kind::Reshape, _) => Op::Reshape {
            shape: shape_attr(c, attrs)?,
        },
        (Kind::Expand, _) => Op::Expand {
            shape: shape_attr(c, attrs)?,
        },
        (Kind::Permute, _) => {
            let (at, v) = attrs.value(c, "perm")?;
            Op::Permute {
                perm: usize_list(c, at, v)?,
            }
        }
        (Kind::Slice, _) => {
            let axis = attrs.axis(c)?;
            let (sa, sv) = attrs.value(c, "start")?;
            let (ea, ev) = attrs.value(c, "end")?;
            let (pa, pv) = attrs.value(c, "step")?;
            Op::Slice {
                axis,
                start: parse_dim(c, sa, sv)?,
                end: parse_dim(c, ea, ev)?,
                step: pv
                    .parse::<i64>()
                    .map_err(|_| c.syntax(pa, format!("expected an integer step, found `{pv}`")))?,
            }
        }
        (Kind::Pad, _) => {
            let (pa, pv) = attrs.value(c, "pads")?;
            let (va, vv) = attrs.value(c, "value")?;
            Op::Pad {
                pads: pads_value(c, pa, pv)?,
                value: scalar_value(c, va, vv)?,
            }
        }
        (Kind::Concat, _) => Op::Concat {
            axis: attrs.axis(c)?,
        },
        (Kind::Flip, _) => {
            let (at, v) = attrs.value(c, "axes")?;
            Op::Flip {
                axes: usize_list(c, at, v)?,
            }
        }
        (Kind::IndexSelect, _) => Op::IndexSelect {
            axis: attrs.axis(c)?,
        },
        (Kind::Gather, _) => Op::Gather {
            axis: attrs.axis(c)?,
        },
        (Kind::Scatter, _) => {
            let axis = attrs.axis(c)?;
            let (at, v) = attrs.value(c, "reduce")?;
            let reduce = [ScatterReduce::Assign, ScatterReduce::Add]
                .into_iter()
                .find(|r| r.name() == v)
                .ok_or_else(|| c.syntax(at, format!("expected `assign` or `add`, found `{v}`")))?;
            Op::Scatter { axis, reduce }
        }
        (Kind::SliceUpdate, _) => {
            let axis = attrs.axis(c)?;
            let (at, v) = attrs.value(c, "start")?;
            Op::SliceUpdate {
                axis,
                start: parse_dim(c, at, v)?,
            }
        }
        (Kind::MatMul, _) => Op::MatMul {
            trans_a: attrs.flag(c, "trans_a")?,
            trans_b: attrs.flag(c, "trans_b")?,
        },
        // Source ops always get their positional argument from `node_line`.
        (Kind::Input | Kind::Param | Kind::State | Kind::Full | Kind::Constant, _) => {
            return Err(c.syntax(attrs.end, "missing the op's value"))
        }
    })
}

/// `dtype[dim, ...]`
fn tensor_type(c: &mut Cursor<'_>) -> Result<TensorType, ParseError> {
    c.skip_ws();
    let at = c.pos;
    let rest = c.rest();
    let len = rest
        .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
        .unwrap_or(rest.len());
    if len == 0 {
        return Err(c.syntax(at, format!("expected a dtype, found {}", c.found())));
    }
    c.pos += len;
    let dtype = dtype_value(c, at, &rest[..len])?;
    c.skip_ws();
    if c.peek() != Some('[') {
        return Err(c.syntax(
            c.pos,
            format!(
                "expected the shape `[...]` after the dtype, found {}",
                c.found()
            ),
        ));
    }
    let (sa, sv) = c.group()?;
    Ok(TensorType::new(dtype, shape_value(c, sa, sv)?))
}

fn dtype_value(c: &Cursor<'_>, at: usize, v: &str) -> Result<DType, ParseError> {
    DType::from_name(v).ok_or_else(|| c.error(at, ParseErrorKind::UnknownDType(v.to_string())))
}

fn usize_value(c: &Cursor<'_>, at: usize, v: &str) -> Result<usize, ParseError> {
    v.parse::<usize>()
        .map_err(|_| c.syntax(at, format!("expected a non-negative integer, found `{v}`")))
}

/// Checks that an attribute value is a bracketed list and returns its inside.
fn list_inside<'a>(c: &Cursor<'_>, at: usize, v: &'a str) -> Result<(usize, &'a str), ParseError> {
    if v.starts_with('[') && v.ends_with(']') && v.len() >= 2 {
        Ok(inner(at, v))
    } else {
        Err(c.syntax(at, format!("expected a list `[...]`, found `{v}`")))
    }
}

fn usize_list(c: &Cursor<'_>, at: usize, v: &str) -> Result<Vec<usize>, ParseError> {
    let (ia, iv) = list_inside(c, at, v)?;
    split_top_level(iv, ia)
        .into_iter()
        .map(|(a, s)| usize_value(c, a, s))
        .collect()
}

fn shape_value(c: &Cursor<'_>, at: usize, v: &str) -> Result<Shape, ParseError> {
    let (ia, iv) = list_inside(c, at, v)?;
    let dims = split_top_level(iv, ia)
        .into_iter()
        .map(|(a, s)| parse_dim(c, a, s))
        .collect::<Result<_, _>>()?;
    Ok(Shape(dims))
}

fn shape_attr(c: &Cursor<'_>, attrs: &Attrs<'_>) -> Result<Shape, ParseError> {
    let (at, v) = attrs.value(c, "shape")?;
    shape_value(c, at, v)
}

/// `[(before, after), ...]`
fn pads_value(
    c: &Cursor<'_>,
    at: usize,
    v: &str,
) -> Result<Vec<(crate::Dim, crate::Dim)>, ParseError> {
    let (ia, iv) = list_inside(c, at, v)?;
    let mut pads = Vec::new();
    for (pa, pv) in split_top_level(iv, ia) {
        let pair = if pv.starts_with('(') && pv.ends_with(')') && pv.len() >= 2 {
            let (qa, qv) = inner(pa, pv);
            split_top_level(qv, qa)
        } else {
            Vec::new()
        };
        let [(la, lv), (ha, hv)] = pair[..] else {
            return Err(c.syntax(
                pa,
                format!("expected a pair `(before, after)`, found `{pv}`"),
            ));
        };
        pads.push((parse_dim(c, la, lv)?, parse_dim(c, ha, hv)?));
    }
    Ok(pads)
}

/// `1` (integer), `1.0` / `1e-5` (float), `true`, `nan`, `inf`, `-inf`, `nan(0xBITS)`.
fn scalar_value(c: &Cursor<'_>, at: usize, v: &str) -> Result<Scalar, ParseError> {
    let parsed = match special(v, 16) {
        Ok(Some(s)) => s.to_f64(v).map(Scalar::Float),
        Ok(None) => v.parse::<Scalar>(),
        Err(e) => Err(e),
    };
    parsed.map_err(|e| c.syntax(at, e))
}

/// A non-decimal float literal.
enum Special {
    Nan(Option<u64>),
    Inf,
    NegInf,
}

/// Recognizes `nan`, `inf`, `-inf` and `nan(0xBITS)` (at most `hex_digits` digits).
fn special(v: &str, hex_digits: usize) -> Result<Option<Special>, String> {
    Ok(Some(match v {
        "nan" => Special::Nan(None),
        "inf" => Special::Inf,
        "-inf" => Special::NegInf,
        _ => {
            let Some(body) = v.strip_prefix("nan(") else {
                return Ok(None);
            };
            let bits = body
                .strip_suffix(')')
                .and_then(|b| b.strip_prefix("0x"))
                .filter(|h| !h.is_empty() && h.len() <= hex_digits)
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    format!("`{v}`: expected `nan(0x...)` with at most {hex_digits} hex digits")
                })?;
            Special::Nan(Some(bits))
        }
    }))
}

impl Special {
    /// The value as an f64 (for scalars and f64 elements).
    fn to_f64(&self, v: &str) -> Result<f64, String> {
        Ok(match *self {
            Special::Nan(None) => f64::NAN,
            Special::Nan(Some(bits)) => nan_or_err(f64::from_bits(bits), v)?,
            Special::Inf => f64::INFINITY,
            Special::NegInf => f64::NEG_INFINITY,
        })
    }
}

fn nan_or_err<T: Into<f64> + Copy>(x: T, v: &str) -> Result<T, String> {
    if x.into().is_nan() {
        Ok(x)
    } else {
        Err(format!("`{v}` is not the bit pattern of a NaN"))
    }
}

fn bad_value(v: &str, dtype: DType) -> String {
    format!("`{v}` is not a valid {dtype} value")
}

fn parse_f64(v: &str) -> Result<f64, String> {
    match special(v, 16)? {
        Some(s) => s.to_f64(v),
        None => v.parse::<f64>().map_err(|_| bad_value(v, DType::F64)),
    }
}

fn parse_f32(v: &str) -> Result<f32, String> {
    Ok(match special(v, 8)? {
        Some(Special::Nan(None)) => f32::NAN,
        Some(Special::Nan(Some(bits))) => {
            let bits = u32::try_from(bits).map_err(|_| bad_value(v, DType::F32))?;
            nan_or_err(f32::from_bits(bits), v)?
        }
        Some(Special::Inf) => f32::INFINITY,
        Some(Special::NegInf) => f32::NEG_INFINITY,
        None => v.parse::<f32>().map_err(|_| bad_value(v, DType::F32))?,
    })
}

/// A 16-bit float: decimals are rounded to f64 and then to the 16-bit type (the printer
/// picks the shortest decimal for which that gives the exact bits back).
fn parse_half<T: Into<f64> + Copy>(
    v: &str,
    dtype: DType,
    from_bits: fn(u16) -> T,
    from_f64: fn(f64) -> T,
    nan: T,
    inf: T,
) -> Result<T, String> {
    Ok(match special(v, 4)? {
        Some(Special::Nan(None)) => nan,
        Some(Special::Nan(Some(bits))) => {
            let bits = u16::try_from(bits).map_err(|_| bad_value(v, dtype))?;
            nan_or_err(from_bits(bits), v)?
        }
        Some(Special::Inf) => inf,
        Some(Special::NegInf) => from_f64(f64::NEG_INFINITY),
        None => from_f64(v.parse::<f64>().map_err(|_| bad_value(v, dtype))?),
    })
}

fn parse_int<T: TryFrom<i128>>(v: &str, dtype: DType) -> Result<T, String> {
    v.parse::<i128>()
        .ok()
        .and_then(|x| T::try_from(x).ok())
        .ok_or_else(|| bad_value(v, dtype))
}

/// Appends one element, read as the storage's dtype.
fn push_element(s: &mut Storage, v: &str) -> Result<(), String> {
    match s {
        Storage::F32(x) => x.push(parse_f32(v)?),
        Storage::F16(x) => x.push(parse_half(
            v,
            DType::F16,
            f16::from_bits,
            f16::from_f64,
            f16::NAN,
            f16::INFINITY,
        )?),
        Storage::BF16(x) => x.push(parse_half(
            v,
            DType::BF16,
            bf16::from_bits,
            bf16::from_f64,
            bf16::NAN,
            bf16::INFINITY,
        )?),
        Storage::F64(x) => x.push(parse_f64(v)?),
        Storage::I8(x) => x.push(parse_int(v, DType::I8)?),
        Storage::I16(x) => x.push(parse_int(v, DType::I16)?),
        Storage::I32(x) => x.push(parse_int(v, DType::I32)?),
        Storage::I64(x) => x.push(parse_int(v, DType::I64)?),
        Storage::U8(x) => x.push(parse_int(v, DType::U8)?),
        Storage::U32(x) => x.push(parse_int(v, DType::U32)?),
        Storage::Bool(x) => x.push(match v {
            "true" => true,
            "false" => false,
            _ => return Err(bad_value(v, DType::Bool)),
        }),
        Storage::Quant(q, _) => return Err(format!("{q} data is written as hex bytes `0x...`")),
    }
    Ok(())
}

fn empty_storage(dtype: DType) -> Storage {
    match dtype {
        DType::F32 => Storage::F32(Vec::new()),
        DType::F16 => Storage::F16(Vec::new()),
        DType::BF16 => Storage::BF16(Vec::new()),
        DType::F64 => Storage::F64(Vec::new()),
        DType::I8 => Storage::I8(Vec::new()),
        DType::I16 => Storage::I16(Vec::new()),
        DType::I32 => Storage::I32(Vec::new()),
        DType::I64 => Storage::I64(Vec::new()),
        DType::U8 => Storage::U8(Vec::new()),
        DType::U32 => Storage::U32(Vec::new()),
        DType::Bool => Storage::Bool(Vec::new()),
        DType::Quant(q) => Storage::Quant(q, Vec::new()),
    }
}

/// A constant's data (written at byte `at`), of the type annotated at `ty_at`.
fn dense(
    c: &Cursor<'_>,
    at: usize,
    v: &str,
    ty: &TensorType,
    ty_at: usize,
) -> Result<Tensor, ParseError> {
    let shape: Vec<usize> = ty
        .shape
        .dims()
        .iter()
        .map(|d| d.as_const().and_then(|n| usize::try_from(n).ok()))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            c.syntax(
                ty_at,
                format!(
                    "a constant needs a concrete, non-negative shape, not {}",
                    ty.shape
                ),
            )
        })?;
    let too_large = || c.syntax(ty_at, format!("constant shape {} is too large", ty.shape));
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(too_large)?;
    let storage = match ty.dtype {
        DType::Quant(q) => {
            // Tensor::new computes the byte count unchecked: make sure it fits first.
            (numel / q.block_size())
                .checked_mul(q.block_bytes())
                .ok_or_else(too_large)?;
            Storage::Quant(q, hex_bytes(c, at, v)?)
        }
        dtype => nested_elements(c, at, v, dtype, &shape)?,
    };
    Tensor::new(shape, storage).map_err(|e| c.syntax(at, e.to_string()))
}

/// `0x` followed by hex digit pairs, `_` allowed anywhere as a separator.
fn hex_bytes(c: &Cursor<'_>, at: usize, v: &str) -> Result<Vec<u8>, ParseError> {
    let Some(hex) = v.strip_prefix("0x") else {
        return Err(c.syntax(
            at,
            format!("expected block-quantized data as hex bytes `0x...`, found `{v}`"),
        ));
    };
    let digits: Vec<u8> = hex.bytes().filter(|&b| b != b'_').collect();
    let bad = || c.syntax(at, "expected an even number of hex digits after `0x`");
    let pairs = digits.chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return Err(bad());
    }
    pairs
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .ok_or_else(bad)
        })
        .collect()
}

/// Nested lists with one level per axis (a bare value for rank 0), read without recursion.
fn nested_elements(
    c: &Cursor<'_>,
    at: usize,
    v: &str,
    dtype: DType,
    shape: &[usize],
) -> Result<Storage, ParseError> {
    let mut storage = empty_storage(dtype);
    let rank = shape.len();
    if rank == 0 {
        if v.starts_with('[') {
            return Err(c.syntax(at, "a rank-0 constant is written as a bare value"));
        }
        push_element(&mut storage, v).map_err(|e| c.syntax(at, e))?;
        return Ok(storage);
    }
    let bytes = v.as_bytes();
    let mut i = 0;
    // Elements (or sub-lists) seen so far in each open list.
    let mut open: Vec<usize> = Vec::new();
    let mut want_item = true;
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let here = at + i;
        let Some(&b) = bytes.get(i) else {
            return Err(c.syntax(here, "unexpected end of the constant's data"));
        };
        let close = if want_item {
            if open.len() < rank {
                if b == b']' && open.last() == Some(&0) {
                    true
                } else if b == b'[' {
                    open.push(0);
                    i += 1;
                    continue;
                } else {
                    let depth = open.len();
                    return Err(c.syntax(
                        here,
                        format!(
                            "expected `[` (the constant has rank {rank}, this is depth {depth})"
                        ),
                    ));
                }
            } else if b == b']' && open.last() == Some(&0) {
                true
            } else {
                let len = v[i..]
                    .find(|ch: char| ch == ',' || ch == ']' || ch == '[' || ch.is_whitespace())
                    .unwrap_or(v.len() - i);
                if len == 0 {
                    return Err(c.syntax(here, "expected a value"));
                }
                push_element(&mut storage, &v[i..i + len]).map_err(|e| c.syntax(here, e))?;
                i += len;
                if let Some(n) = open.last_mut() {
                    *n += 1;
                }
                want_item = false;
                continue;
            }
        } else {
            match b {
                b',' => {
                    i += 1;
                    want_item = true;
                    continue;
                }
                b']' => true,
                _ => {
                    return Err(c.syntax(
                        here,
                        format!(
                            "expected `,` or `]`, found `{}`",
                            &v[i..].chars().next().unwrap_or(' ')
                        ),
                    ))
                }
            }
        };
        if close {
            let Some(n) = open.pop() else {
                return Err(c.syntax(here, "unexpected `]`"));
            };
            let depth = open.len();
            if n != shape[depth] {
                return Err(c.syntax(
                    here,
                    format!(
                        "expected {} entries along axis {depth} of the constant, found {n}",
                        shape[depth]
                    ),
                ));
            }
            i += 1;
            match open.last_mut() {
                Some(parent) => {
                    *parent += 1;
                    want_item = false;
                }
                None => {
                    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
                        i += 1;
                    }
                    if i < bytes.len() {
                        return Err(c.syntax(at + i, "unexpected text after the constant's data"));
                    }
                    return Ok(storage);
                }
            }
        }
    }
}
