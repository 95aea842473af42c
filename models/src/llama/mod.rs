//! Llama-family causal language models, with Hugging Face's `state_dict` names.
//!
//! [`LlamaForCausalLM`] is `transformers.LlamaForCausalLM`: token embedding, decoder layers of
//! RMSNorm + grouped-query attention with RoPE + RMSNorm + SwiGLU MLP, a final RMSNorm and the
//! LM head (optionally tied to the embedding). Every layer owns a fixed-capacity KV cache
//! (state `model.layers.N.self_attn.k` / `.v`), used by [`LlamaForCausalLM::forward_cached`].

mod config;
pub mod gguf;
mod load;

pub use config::LlamaConfig;
pub use load::LoadedLlama;

use kiln_nn::layers::{
    Attention, Embedding, EmbeddingConfig, GatedMlp, KvCache, Linear, LinearConfig, RMSNorm,
};
use kiln_nn::Tensor;

/// `LlamaForCausalLM`: `model` (the decoder) and `lm_head`.
///
/// With `tie_word_embeddings` the logits use `model.embed_tokens.weight`; `lm_head.weight` is
/// still listed by `state_dict_keys`, as Hugging Face's `state_dict()` lists it (sharing the
/// embedding's storage), but the traced graphs never read it.
#[kiln_nn::model(config = LlamaConfig)]
pub struct LlamaForCausalLM {
    /// The decoder.
    #[module(config = cfg.clone())]
    pub model: LlamaModel,
    /// `[vocab_size, hidden_size]`, no bias.
    #[module(config = LinearConfig::new(cfg.hidden_size, cfg.vocab_size).no_bias())]
    pub lm_head: Linear,
    /// The configuration.
    #[config(cfg.clone())]
    pub config: LlamaConfig,
}

impl LlamaForCausalLM {
    /// Logits `[batch, seq, vocab_size]` (f32) for token ids `[batch, seq]` (integer), with
    /// causal attention over these positions only (positions `0..seq`). Reads no state.
    #[track_caller]
    pub fn forward(&self, ids: &Tensor) -> Tensor {
        self.logits(&self.model.forward(ids, false))
    }

    /// Logits for `seq` new tokens after `past` cached ones (the symbol `past`, bound at run
    /// time): positions `past..past + seq`, attending over every cached position too. Each
    /// layer's keys and values are written into its KV cache, whose new value is the graph's
    /// state update; feed it to the next step. `past = 0` runs a prompt.
    #[track_caller]
    pub fn forward_cached(&self, ids: &Tensor) -> Tensor {
        self.logits(&self.model.forward(ids, true))
    }

    /// [`Self::forward_cached`] for the last position only: logits `[batch, 1, vocab_size]`
    /// (what generation needs; skips the LM head for the other positions).
    #[track_caller]
    pub fn forward_cached_last(&self, ids: &Tensor) -> Tensor {
        let h = self.model.forward(ids, true);
        let seq = h.size(1);
        self.logits(&h.narrow(1, seq - 1, 1))
    }

    /// [`Self::forward`] that also returns every stage's output, named as the reference dumps
    /// of `scripts/hf_reference.py` name them: `embed`, `layers.N` (each decoder layer's
    /// output), `norm` (after the final norm) and `logits`.
    #[track_caller]
    pub fn forward_stages(&self, ids: &Tensor) -> Vec<(String, Tensor)> {
        let mut stages = Vec::new();
        let m = &self.model;
        let mut h = m.embed_tokens.forward(ids);
        stages.push(("embed".to_string(), h.clone()));
        for (i, layer) in m.layers.iter().enumerate() {
            h = layer.forward(&h, false);
            stages.push((format!("layers.{i}"), h.clone()));
        }
        let h = m.norm.forward(&h);
        stages.push(("norm".to_string(), h.clone()));
        stages.push(("logits".to_string(), self.logits(&h)));
        stages
    }

    /// Every layer's KV cache, in layer order.
    pub fn kv_caches(&self) -> Vec<&KvCache> {
        self.model
            .layers
            .iter()
            .map(LlamaDecoderLayer::cache)
            .collect()
    }

    #[track_caller]
    fn logits(&self, hidden: &Tensor) -> Tensor {
        if self.config.tie_word_embeddings {
            hidden.matmul_t(&self.model.embed_tokens.weight.val())
        } else {
            self.lm_head.forward(hidden)
        }
    }
}

/// `LlamaModel`: embedding, decoder layers, final norm.
#[kiln_nn::model(config = LlamaConfig)]
pub struct LlamaModel {
    /// `[vocab_size, hidden_size]`.
    #[module(config = EmbeddingConfig::new(cfg.vocab_size, cfg.hidden_size))]
    pub embed_tokens: Embedding,
    /// The decoder layers.
    #[module(config = cfg.clone(), count = cfg.num_hidden_layers)]
    pub layers: Vec<LlamaDecoderLayer>,
    /// Final RMSNorm.
    #[module(config = cfg.norm())]
    pub norm: RMSNorm,
}

impl LlamaModel {
    /// Final hidden states `[batch, seq, hidden_size]`, through the KV caches if `cached`.
    #[track_caller]
    pub fn forward(&self, ids: &Tensor, cached: bool) -> Tensor {
        let mut h = self.embed_tokens.forward(ids);
        for layer in &self.layers {
            h = layer.forward(&h, cached);
        }
        self.norm.forward(&h)
    }
}

/// One decoder layer: pre-norm attention and pre-norm MLP, each with a residual.
#[kiln_nn::model(config = LlamaConfig)]
pub struct LlamaDecoderLayer {
    /// Grouped-query self-attention with RoPE and the layer's KV cache.
    #[module(config = cfg.attention())]
    pub self_attn: Attention,
    /// SwiGLU MLP.
    #[module(config = cfg.mlp())]
    pub mlp: GatedMlp,
    /// Norm before the attention.
    #[module(config = cfg.norm())]
    pub input_layernorm: RMSNorm,
    /// Norm before the MLP.
    #[module(config = cfg.norm())]
    pub post_attention_layernorm: RMSNorm,
}

impl LlamaDecoderLayer {
    /// The layer's KV cache.
    pub fn cache(&self) -> &KvCache {
        self.self_attn
            .cache
            .as_ref()
            .expect("Llama attention layers are built with a KV cache")
    }

    /// `[batch, seq, hidden_size]` to the same.
    #[track_caller]
    pub fn forward(&self, x: &Tensor, cached: bool) -> Tensor {
        let h = self.input_layernorm.forward(x);
        let a = if cached {
            self.self_attn.forward_cached(&h, self.cache())
        } else {
            self.self_attn.forward(&h)
        };
        let x = x + a;
        let m = self.mlp.forward(&self.post_attention_layernorm.forward(&x));
        x + m
    }
}
