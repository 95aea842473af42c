//! `kiln-ir`: Kiln's tensor IR.
//!
//! dtypes (including GGUF block-quantized types), symbolic dimensions, the op set, a graph
//! builder with shape inference, a text format, and the reference interpreter that is the
//! oracle for every rewrite and every backend.
//!
//! ```
//! use kiln_ir::{DType, Graph, Shape};
//!
//! let mut g = Graph::new();
//! let x = g.input("x", DType::F32, Shape::new(["seq", "64".into()]))?;
//! # Ok::<(), kiln_ir::IrError>(())
//! ```

mod builder;
pub mod dim;
pub mod dtype;
pub mod error;
pub mod graph;
mod infer;
pub mod interp;
pub mod numerics;
pub mod op;
pub mod quant;
pub mod shape;
pub mod tensor;
pub mod text;

pub use dim::{Bindings, Dim, DimAtom, DimError, DimTerm};
pub use dtype::{DType, Scalar};
pub use error::IrError;
pub use graph::{Graph, Node, NodeId};
pub use infer::infer_type;
pub use interp::{run, Env, EvalError, Outputs};
pub use op::{BinaryOp, Op, ReduceOp, ScatterReduce, UnaryOp};
pub use quant::QuantType;
pub use shape::{broadcast_shapes, Shape, TensorType};
pub use tensor::{Element, Storage, Tensor, TensorError};
pub use text::{parse_graph, ParseError, ParseErrorKind};
