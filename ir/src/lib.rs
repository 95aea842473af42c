//! `kiln-ir`: Kiln's tensor IR.
//!
//! dtypes (including GGUF block-quantized types), symbolic dimensions, the op set, a graph
//! builder with shape inference, a text format, and the reference interpreter that is the
//! oracle for every rewrite and every backend.

pub mod quant;
