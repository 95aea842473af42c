//! `Embedding`: a lookup table of vectors, indexed by integer ids.

use crate::tensor::Tensor;
use crate::Param;
use kiln_ir::Shape;
use std::panic::Location;

/// Configuration of an [`Embedding`] layer.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddingConfig {
    /// Rows of the table (vocabulary size).
    pub num_embeddings: usize,
    /// Size of each vector.
    pub embedding_dim: usize,
}

impl EmbeddingConfig {
    /// A `[num_embeddings, embedding_dim]` table.
    pub fn new(num_embeddings: usize, embedding_dim: usize) -> EmbeddingConfig {
        EmbeddingConfig {
            num_embeddings,
            embedding_dim,
        }
    }
}

/// `torch.nn.Embedding`: ids of any shape `[*]` give vectors `[*, embedding_dim]`.
/// (PyTorch's `padding_idx` only changes initialization and gradients, not the lookup.)
#[crate::model(config = EmbeddingConfig)]
pub struct Embedding {
    /// `[num_embeddings, embedding_dim]`.
    #[param(shape = [cfg.num_embeddings, cfg.embedding_dim])]
    pub weight: Param,
}

impl Embedding {
    /// Looks up integer `ids` of any shape. A block-quantized table (a GGUF file's dtype, set
    /// when tracing) gives f32 vectors.
    #[track_caller]
    pub fn forward(&self, ids: &Tensor) -> Tensor {
        let loc = Location::caller();
        if !ids.dtype().is_int() {
            return ids.usage(
                loc,
                format!("embedding: ids must be integers, got {}", ids.ty()),
            );
        }
        let w = self.weight.val();
        let shape = ids.shape();
        let flat = ids.reshape(Shape(vec![shape.numel()]));
        let mut rows = w.index_select(0, &flat);
        if rows.dtype().is_quantized() {
            // A block-quantized table (GGUF) gives its rows dequantized.
            rows = rows.to(kiln_ir::DType::F32);
        }
        let mut out = shape.0;
        out.push(w.size(-1));
        rows.reshape(Shape(out))
    }
}
