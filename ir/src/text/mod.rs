//! The IR's text format: `Graph`'s `Display` prints it, [`parse_graph`] reads it back.
//!
//! ```text
//! graph {
//!   %0 = input "x" : f32[batch, seq, 64]
//!   %1 = param "layers.0.mlp.up_proj.weight" : q4_0[256, 64]
//!   %2 = matmul %0, %1 trans_b : f32[batch, seq, 256]
//!   %3 = full 0.5 : f32[]
//!   %4 = expand %3 shape=[batch, seq, 256] : f32[batch, seq, 256]
//!   %5 = mul %2, %4 : f32[batch, seq, 256]
//!   %6 = reduce.sum %5 axes=[2] keepdim : f32[batch, seq, 1]
//!   %7 = slice %0 axis=1 start=1 end=(seq - 1) step=2 : f32[batch, (seq - 1) // 2, 64]
//!   output "y" = %6
//! }
//! ```
//!
//! # Grammar
//!
//! One item per line; `#` starts a comment that runs to the end of the line (outside
//! strings); blank lines are ignored; spaces and tabs between tokens are free.
//!
//! ```text
//! graph    := 'graph' '{'  item*  '}'
//! item     := node | 'output' string '=' ref | 'state_update' string '=' ref
//! node     := ref '=' op ':' type            # ids count up: %0, %1, %2, ...
//! ref      := '%' digits
//! type     := dtype '[' (dim (',' dim)*)? ']'          # f32[batch, seq + 1, 64], i64[]
//! op       := ('input' | 'param' | 'state') string     # dtype and shape: the type
//!           | 'full' scalar                            # dtype and shape: the type
//!           | 'constant' data                          # dtype and shape: the type
//!           | 'iota' 'axis=' N                         # dtype and shape: the type
//!           | name operands? attr*
//! operands := ref (',' ref)*
//! attr     := key '=' value | flag
//! string   := '"' (char | '\\' | '\"' | '\n' | '\r' | '\t' | '\0' | '\u{HEX}')* '"'
//! dim      := a `Dim` expression: seq, 2*seq - 1, (seq + 1) // 2, min(seq, 128), ...
//! dimattr  := word | '(' dim ')'             # parenthesized unless a bare word: (seq - 1)
//! scalar   := integer | float | 'true' | 'false'   # 1 is an integer, 1.0 a float
//! float    := decimal | 'inf' | '-inf' | 'nan' | 'nan(0xBITS)'   # BITS: any other NaN
//! data     := element                        # rank 0
//!           | '[' (data (',' data)*)? ']'    # one nesting level per axis
//!           | '0x' hex                       # block-quantized bytes, blocks split by '_'
//! ```
//!
//! Ops and their attributes (`name` is [`crate::Op::name`]):
//!
//! | op | operands | attributes |
//! |----|----------|------------|
//! | `neg`, `exp`, ... (unary) | 1 | |
//! | `add`, `lt`, ... (binary) | 2 | |
//! | `where` | 3 | |
//! | `cast` | 1 | `to=DTYPE` |
//! | `dim_value` | 0 | `dim=dimattr` (dtype from the type) |
//! | `reduce.sum`, `.max`, `.min`, `.prod`, `.argmax` | 1 | `axes=[..]`, flag `keepdim` |
//! | `reshape`, `expand` | 1 | `shape=[dim, ..]` |
//! | `permute` | 1 | `perm=[..]` |
//! | `slice` | 1 | `axis=N start=dimattr end=dimattr step=N` |
//! | `pad` | 1 | `pads=[(dim, dim), ..] value=scalar` |
//! | `concat` | 1 or more | `axis=N` |
//! | `flip` | 1 | `axes=[..]` |
//! | `index_select`, `gather` | 2 | `axis=N` |
//! | `scatter` | 3 | `axis=N reduce=assign\|add` |
//! | `slice_update` | 2 | `axis=N start=dimattr` |
//! | `matmul` | 2 | flags `trans_a`, `trans_b` |
//!
//! Source ops (`input`, `param`, `state`, `full`, `constant`, `iota`) take their dtype and
//! shape from the type after `:`; every other op spells out all its attributes, and its
//! type is inferred again and must equal the written one.
//!
//! Constants print every element. Floats print as the shortest decimal that reads back to the
//! same bits in their dtype (f16 and bf16 decimals are read by rounding to f64 and then to the
//! 16-bit type); `-0.0`, infinities and NaNs (with their payload) round-trip exactly. Symbol
//! names must be identifiers (`[A-Za-z_][A-Za-z0-9_]*`) to read back.

mod lex;
mod parse;
mod print;

pub use parse::parse_graph;

use crate::error::IrError;
use crate::graph::Graph;
use crate::shape::TensorType;

/// Why a text could not be read as a graph: where, and what was wrong.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("line {line}, column {column}: {kind}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What was wrong.
    pub kind: ParseErrorKind,
}

impl ParseError {
    /// The graph error, if a node, output or state update did not type-check.
    pub fn ir_error(&self) -> Option<&IrError> {
        match &self.kind {
            ParseErrorKind::Ir(e) => Some(e),
            _ => None,
        }
    }
}

/// The kinds of [`ParseError`].
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ParseErrorKind {
    /// Malformed text (a missing `=`, an unterminated string, a bad attribute, ...).
    #[error("{0}")]
    Syntax(String),
    /// An op name the IR does not have.
    #[error("unknown op `{0}`")]
    UnknownOp(String),
    /// A dtype name the IR does not have.
    #[error("unknown dtype `{0}`")]
    UnknownDType(String),
    /// A reference to a node that is not (yet) defined.
    #[error("undefined node %{id} ({})", defined_so_far(*defined))]
    UndefinedNode {
        /// The referenced id.
        id: u32,
        /// How many nodes were defined at that point.
        defined: usize,
    },
    /// A node id out of order: ids must be `%0, %1, %2, ...`.
    #[error("node ids must count up from %0: expected %{expected}, found %{found}")]
    NodeOrder {
        /// The id the node should have.
        expected: usize,
        /// The id it has.
        found: u32,
    },
    /// A dimension expression that could not be read.
    #[error("bad dimension `{text}`: {message}")]
    BadDim {
        /// The expression.
        text: String,
        /// What is wrong with it.
        message: String,
    },
    /// The type written after `:` differs from the one inferred for the node.
    #[error("the annotated type {annotated} does not match the inferred type {inferred}")]
    TypeMismatch {
        /// The type in the text.
        annotated: TensorType,
        /// The type inference gives.
        inferred: TensorType,
    },
    /// A node, output or state update that the graph rejected.
    #[error("{0}")]
    Ir(IrError),
}

fn defined_so_far(defined: usize) -> String {
    match defined {
        0 => "no node is defined yet".into(),
        1 => "only %0 is defined so far".into(),
        n => format!("only %0 to %{} are defined so far", n - 1),
    }
}

impl std::str::FromStr for Graph {
    type Err = ParseError;

    /// Same as [`parse_graph`].
    fn from_str(text: &str) -> Result<Graph, ParseError> {
        parse_graph(text)
    }
}
