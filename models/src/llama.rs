//! Llama-family causal language models, with Hugging Face's `state_dict` names.
//!
//! [`LlamaForCausalLM`] is `transformers.LlamaForCausalLM`: token embedding, decoder layers of
//! RMSNorm + grouped-query attention with RoPE + RMSNorm + SwiGLU MLP, a final RMSNorm and the
//! LM head (optionally tied to the embedding). Every layer owns a fixed-capacity KV cache
//! (state `model.layers.N.self_attn.k` / `.v`), used by [`LlamaForCausalLM::forward_cached`].

use kiln_ir::Dim;
use kiln_nn::layers::{
    Attention, AttentionConfig, Embedding, EmbeddingConfig, GatedMlp, GatedMlpConfig, KvCache,
    Linear, LinearConfig, RMSNorm, RMSNormConfig, RopeScaling, RotaryConfig,
};
use kiln_nn::Tensor;

/// Configuration of a Llama model (the fields of Hugging Face's `LlamaConfig` that shape it).
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (fewer than the query heads: grouped-query attention).
    pub num_key_value_heads: usize,
    /// Size of each head (usually `hidden_size / num_attention_heads`).
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE frequency scaling (`rope_scaling` / `rope_parameters`: none, linear, llama3).
    pub rope_scaling: RopeScaling,
    /// The LM head reuses the token embedding.
    pub tie_word_embeddings: bool,
    /// Biases on the attention projections (all four, as Hugging Face's Llama).
    pub attention_bias: bool,
    /// Biases on the MLP projections.
    pub mlp_bias: bool,
    /// Longest sequence; also the capacity of the KV caches.
    pub max_position_embeddings: usize,
    /// Batch size of the KV caches (a constant, or a symbol bound by the cache tensors);
    /// [`LlamaForCausalLM::forward_cached`]'s ids must have this batch dim.
    pub kv_cache_batch: Dim,
}

impl LlamaConfig {
    /// SmolLM2-135M (`HuggingFaceTB/SmolLM2-135M-Instruct`): 30 layers, hidden 576, 9 query
    /// and 3 key/value heads of 64, tied embeddings, a 49152-token vocabulary. The KV caches
    /// have batch 1 and `max_seq` positions.
    pub fn smollm2_135m(max_seq: usize) -> LlamaConfig {
        LlamaConfig {
            vocab_size: 49152,
            hidden_size: 576,
            intermediate_size: 1536,
            num_hidden_layers: 30,
            num_attention_heads: 9,
            num_key_value_heads: 3,
            head_dim: 64,
            rms_norm_eps: 1e-5,
            rope_theta: 100000.0,
            rope_scaling: RopeScaling::None,
            tie_word_embeddings: true,
            attention_bias: false,
            mlp_bias: false,
            max_position_embeddings: max_seq,
            kv_cache_batch: Dim::constant(1),
        }
    }

    fn attention(&self) -> AttentionConfig {
        let rope =
            RotaryConfig::new(self.head_dim, self.rope_theta).with_scaling(self.rope_scaling);
        AttentionConfig::new(
            self.hidden_size,
            self.num_attention_heads,
            self.num_key_value_heads,
            self.head_dim,
        )
        .with_bias(self.attention_bias, self.attention_bias)
        .with_rope(Some(rope))
        .with_cache(self.kv_cache_batch.clone(), self.max_position_embeddings)
    }

    fn norm(&self) -> RMSNormConfig {
        RMSNormConfig {
            hidden_size: self.hidden_size,
            eps: self.rms_norm_eps,
        }
    }

    fn mlp(&self) -> GatedMlpConfig {
        GatedMlpConfig {
            bias: self.mlp_bias,
            ..GatedMlpConfig::swiglu(self.hidden_size, self.intermediate_size)
        }
    }
}

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
