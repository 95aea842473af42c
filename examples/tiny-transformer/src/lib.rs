//! A small decoder-only transformer written with `#[kiln::model]`, as a user crate would: it
//! depends on the `kiln` crate alone.

use kiln::ir::DType;
use kiln::nn::functional::{gelu, scaled_dot_product_attention, GeluApprox};
use kiln::nn::layers::{Linear, LinearConfig};
use kiln::nn::{Param, Tensor, Trace, TraceError};
use kiln::{dims, model};

/// Hyper-parameters.
#[derive(Clone, Debug)]
pub struct Config {
    /// Vocabulary size.
    pub vocab: usize,
    /// Model width.
    pub dim: usize,
    /// Attention heads.
    pub heads: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// MLP width.
    pub hidden: usize,
    /// RMSNorm epsilon.
    pub eps: f64,
}

/// RMSNorm: `x / sqrt(mean(x²) + eps) * weight`.
#[model(config = Config)]
pub struct RmsNorm {
    #[param(shape = [cfg.dim])]
    pub weight: Param,
    #[config(cfg.eps)]
    pub eps: f64,
}

impl RmsNorm {
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let ms = x.square().mean(-1, true);
        x * (ms + self.eps).rsqrt() * self.weight.val()
    }
}

/// A pre-norm block: causal self-attention and a GELU MLP, each with a residual.
#[model(config = Config)]
pub struct Block {
    #[module(config = cfg.clone())]
    pub attn_norm: RmsNorm,
    #[module(config = LinearConfig::new(cfg.dim, 3 * cfg.dim).no_bias())]
    pub qkv: Linear,
    #[module(config = LinearConfig::new(cfg.dim, cfg.dim).no_bias())]
    pub proj: Linear,
    #[module(config = cfg.clone())]
    pub mlp_norm: RmsNorm,
    #[module(config = LinearConfig::new(cfg.dim, cfg.hidden))]
    pub fc1: Linear,
    #[module(config = LinearConfig::new(cfg.hidden, cfg.dim))]
    pub fc2: Linear,
    #[config(cfg.heads)]
    pub heads: usize,
}

impl Block {
    /// `x`: `[batch, seq, dim]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (b, s, d) = (x.size(0), x.size(1), x.size(2));
        let head_dim = d.as_const().unwrap_or(0) / self.heads as i64;
        let qkv = self.qkv.forward(&self.attn_norm.forward(x));
        // [batch, seq, 3, heads, head_dim] -> three [batch, heads, seq, head_dim]
        let qkv = qkv.reshape(dims![b.clone(), s.clone(), 3, self.heads, head_dim]);
        let qkv = qkv.permute(&[2, 0, 3, 1, 4]);
        let [q, k, v] = [0, 1, 2].map(|i| qkv.slice(0, i, i + 1, 1).squeeze(0));
        let attn = scaled_dot_product_attention(&q, &k, &v, None, true, None);
        let attn = attn.transpose(1, 2).reshape(dims![b, s, d]);
        let x = x + self.proj.forward(&attn);
        let h = self.fc1.forward(&self.mlp_norm.forward(&x));
        &x + self.fc2.forward(&gelu(&h, GeluApprox::Tanh))
    }
}

/// Token embedding, blocks, final norm and a head tied to the embedding.
#[model(config = Config)]
pub struct TinyTransformer {
    #[param(shape = [cfg.vocab, cfg.dim])]
    pub embed: Param,
    #[module(config = cfg.clone(), count = cfg.layers)]
    pub blocks: Vec<Block>,
    #[module(config = cfg.clone())]
    pub norm: RmsNorm,
}

impl TinyTransformer {
    /// `ids`: `[batch, seq]` i64 token ids -> `[batch, seq, vocab]` logits.
    pub fn forward(&self, ids: &Tensor) -> Tensor {
        let (b, s) = (ids.size(0), ids.size(1));
        let table = self.embed.val();
        let mut x = table
            .index_select(0, &ids.flatten(0, 1))
            .reshape(dims![b, s, table.size(1)]);
        for block in &self.blocks {
            x = block.forward(&x);
        }
        self.norm.forward(&x).matmul_t(&table)
    }

    /// Traces `forward` for any batch size and sequence length.
    pub fn trace(&self) -> Result<kiln::ir::Graph, TraceError> {
        let trace = Trace::new();
        let ids = trace.input("ids", DType::I64, dims!["batch", "seq"]);
        trace.output("logits", &self.forward(&ids));
        trace.finish()
    }
}

/// The configuration the example and its tests use.
pub fn small_config() -> Config {
    Config {
        vocab: 37,
        dim: 16,
        heads: 2,
        layers: 2,
        hidden: 40,
        eps: 1e-5,
    }
}
