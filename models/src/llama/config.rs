//! [`LlamaConfig`]: the hyperparameters of a Llama-family model, from a GGUF file's metadata
//! or a Hugging Face `config.json`.

use kiln_ir::{DType, Dim};
use kiln_nn::layers::{AttentionConfig, GatedMlpConfig, RMSNormConfig, RopeScaling, RotaryConfig};
use kiln_runtime::weights::gguf::GgufFile;
use kiln_runtime::weights::WeightError;
use std::sync::Arc;

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
    /// RoPE frequency scaling (`rope_scaling` / `rope_parameters`: none, linear, llama3; from
    /// GGUF: linear, or per-frequency factors from `rope_freqs.weight`).
    pub rope_scaling: RopeScaling,
    /// The LM head reuses the token embedding.
    pub tie_word_embeddings: bool,
    /// Biases on the query, key and value projections (Hugging Face's `attention_bias`;
    /// always on for Qwen2).
    pub attention_bias: bool,
    /// A bias on the output projection (Llama with `attention_bias` has one, Qwen2 none).
    pub attention_out_bias: bool,
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
            attention_out_bias: false,
            mlp_bias: false,
            max_position_embeddings: max_seq,
            kv_cache_batch: Dim::constant(1),
        }
    }

    pub(super) fn attention(&self) -> AttentionConfig {
        let rope = RotaryConfig::new(self.head_dim, self.rope_theta)
            .with_scaling(self.rope_scaling.clone());
        AttentionConfig::new(
            self.hidden_size,
            self.num_attention_heads,
            self.num_key_value_heads,
            self.head_dim,
        )
        .with_bias(self.attention_bias, self.attention_out_bias)
        .with_rope(Some(rope))
        .with_cache(self.kv_cache_batch.clone(), self.max_position_embeddings)
    }

    pub(super) fn norm(&self) -> RMSNormConfig {
        RMSNormConfig {
            hidden_size: self.hidden_size,
            eps: self.rms_norm_eps,
        }
    }

    pub(super) fn mlp(&self) -> GatedMlpConfig {
        GatedMlpConfig {
            bias: self.mlp_bias,
            ..GatedMlpConfig::swiglu(self.hidden_size, self.intermediate_size)
        }
    }
}

/// The GGUF tensor holding per-frequency RoPE divisors (Llama 3.1 files).
pub(super) const ROPE_FREQS: &str = "rope_freqs.weight";

/// The per-frequency RoPE divisors of a GGUF file (`rope_freqs.weight`, f32, one per rotated
/// pair of a `head_dim` head: how llama.cpp's converter stores Llama 3.1's scaling), if any.
fn rope_factors(file: &GgufFile, head_dim: usize) -> Result<Option<Arc<[f32]>>, WeightError> {
    let Some(info) = file.info(ROPE_FREQS) else {
        return Ok(None);
    };
    let t = file.tensor(ROPE_FREQS)?;
    let bad = |expected: String| WeightError::Shape {
        tensor: ROPE_FREQS.into(),
        expected,
        got: format!("{}{:?}", t.dtype, t.shape),
    };
    if t.dtype != DType::F32 || t.shape != [head_dim / 2] {
        return Err(bad(format!(
            "f32[{}] (one factor per rotated pair of a {head_dim}-dim head)",
            head_dim / 2
        )));
    }
    let tensor = t.to_tensor()?;
    let factors = tensor.as_slice::<f32>().expect("checked: an f32 tensor");
    RopeScaling::check_factors(factors, head_dim / 2).map_err(|why| WeightError::Malformed {
        file: file.name().to_string(),
        offset: info.offset,
        what: format!("tensor `{ROPE_FREQS}`: {why}"),
    })?;
    Ok(Some(factors.into()))
}

impl LlamaConfig {
    /// The configuration stored in a GGUF file's metadata (`{arch}.block_count`, ...), with
    /// KV caches of batch 1 and `max_seq` positions (at most the model's context length).
    pub fn from_gguf(file: &GgufFile, max_seq: usize) -> Result<LlamaConfig, WeightError> {
        let arch = super::gguf::arch_of(file)?;
        let key = |k: &str| format!("{}.{k}", arch.name());
        let meta_err = |k: &str, what: String| WeightError::Metadata {
            file: file.name().to_string(),
            key: k.to_string(),
            what,
        };
        let hidden_size = file.require_usize(&key("embedding_length"))?;
        let heads = file.require_usize(&key("attention.head_count"))?;
        if heads == 0 || hidden_size % heads != 0 {
            return Err(meta_err(
                &key("attention.head_count"),
                format!("{heads} heads do not divide the width {hidden_size}"),
            ));
        }
        let kv_heads = file
            .get_usize(&key("attention.head_count_kv"))?
            .unwrap_or(heads);
        if kv_heads == 0 || heads % kv_heads != 0 {
            return Err(meta_err(
                &key("attention.head_count_kv"),
                format!("{kv_heads} key/value heads do not divide {heads} query heads"),
            ));
        }
        let head_dim = match file.get_usize(&key("attention.key_length"))? {
            Some(d) => d,
            None => file
                .get_usize(&key("rope.dimension_count"))?
                .unwrap_or(hidden_size / heads),
        };
        let vocab_size = match file.get_usize(&key("vocab_size"))? {
            Some(v) => v,
            None => match file.get_str_array("tokenizer.ggml.tokens")? {
                Some(t) => t.len(),
                None => file.tensor("token_embd.weight")?.shape[0],
            },
        };
        let context = file.get_usize(&key("context_length"))?.unwrap_or(max_seq);
        let rope_scaling = match file.get_str(&key("rope.scaling.type"))? {
            None | Some("none") => RopeScaling::None,
            Some("linear") => RopeScaling::Linear {
                factor: file
                    .get_f64(&key("rope.scaling.factor"))?
                    .ok_or_else(|| meta_err(&key("rope.scaling.factor"), "missing".into()))?,
            },
            Some(other) => {
                return Err(meta_err(
                    &key("rope.scaling.type"),
                    format!("RoPE scaling `{other}` is not supported (none, linear)"),
                ))
            }
        };
        let rope_scaling = match rope_factors(file, head_dim)? {
            None => rope_scaling,
            Some(f) if rope_scaling == RopeScaling::None => RopeScaling::Factors(f),
            Some(_) => {
                return Err(meta_err(
                    &key("rope.scaling.type"),
                    "RoPE scaling together with per-frequency factors (`rope_freqs.weight`) \
                     is not supported"
                        .into(),
                ))
            }
        };
        let qkv_bias = file.info("blk.0.attn_q.bias").is_some();
        Ok(LlamaConfig {
            vocab_size,
            hidden_size,
            intermediate_size: file.require_usize(&key("feed_forward_length"))?,
            num_hidden_layers: file.require_usize(&key("block_count"))?,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: file
                .get_f64(&key("attention.layer_norm_rms_epsilon"))?
                .unwrap_or(1e-5),
            rope_theta: file.get_f64(&key("rope.freq_base"))?.unwrap_or(10000.0),
            rope_scaling,
            tie_word_embeddings: file.info("output.weight").is_none(),
            attention_bias: qkv_bias,
            attention_out_bias: file.info("blk.0.attn_output.bias").is_some(),
            mlp_bias: false,
            max_position_embeddings: max_seq.min(context.max(1)),
            kv_cache_batch: Dim::constant(1),
        })
    }

    /// The configuration in a Hugging Face `config.json` (`model_type` llama, mistral or
    /// qwen2), with KV caches of batch 1 and `max_seq` positions.
    pub fn from_hf_json(
        json: &serde_json::Value,
        file: &str,
        max_seq: usize,
    ) -> Result<LlamaConfig, WeightError> {
        let err = |k: &str, what: String| WeightError::Metadata {
            file: file.to_string(),
            key: k.to_string(),
            what,
        };
        let usize_of = |k: &str| -> Result<Option<usize>, WeightError> {
            match json.get(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(|x| Some(x as usize))
                    .ok_or_else(|| err(k, format!("expected a non-negative integer, got {v}"))),
            }
        };
        let need = |k: &str| usize_of(k)?.ok_or_else(|| err(k, "missing".into()));
        let f64_of = |k: &str, default: f64| -> Result<f64, WeightError> {
            match json.get(k) {
                None | Some(serde_json::Value::Null) => Ok(default),
                Some(v) => v
                    .as_f64()
                    .ok_or_else(|| err(k, format!("expected a number, got {v}"))),
            }
        };
        let bool_of =
            |k: &str, default: bool| json.get(k).and_then(|v| v.as_bool()).unwrap_or(default);
        let model_type = json
            .get("model_type")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let qwen2 = match model_type {
            "llama" | "mistral" => false,
            "qwen2" => true,
            other => {
                return Err(err(
                    "model_type",
                    format!(
                    "`{other}` is not a Llama-family model Kiln supports (llama, mistral, qwen2)"
                ),
                ))
            }
        };
        let hidden_size = need("hidden_size")?;
        let heads = need("num_attention_heads")?;
        if heads == 0 || hidden_size % heads != 0 {
            return Err(err(
                "num_attention_heads",
                format!("{heads} heads do not divide the width {hidden_size}"),
            ));
        }
        let rope_scaling = match json.get("rope_scaling") {
            None | Some(serde_json::Value::Null) => RopeScaling::None,
            Some(s) => {
                let kind = s
                    .get("rope_type")
                    .or_else(|| s.get("type"))
                    .and_then(|v| v.as_str())
                    .unwrap_or("");
                let num = |k: &str| {
                    s.get(k)
                        .and_then(|v| v.as_f64())
                        .ok_or_else(|| err(&format!("rope_scaling.{k}"), "missing".into()))
                };
                match kind {
                    "default" => RopeScaling::None,
                    "linear" => RopeScaling::Linear {
                        factor: num("factor")?,
                    },
                    "llama3" => RopeScaling::Llama3 {
                        factor: num("factor")?,
                        low_freq_factor: num("low_freq_factor")?,
                        high_freq_factor: num("high_freq_factor")?,
                        original_max_position_embeddings: num("original_max_position_embeddings")?
                            as usize,
                    },
                    other => {
                        return Err(err(
                            "rope_scaling",
                            format!("RoPE scaling `{other}` is not supported (linear, llama3)"),
                        ))
                    }
                }
            }
        };
        let attention_bias = bool_of("attention_bias", qwen2);
        Ok(LlamaConfig {
            vocab_size: need("vocab_size")?,
            hidden_size,
            intermediate_size: need("intermediate_size")?,
            num_hidden_layers: need("num_hidden_layers")?,
            num_attention_heads: heads,
            num_key_value_heads: usize_of("num_key_value_heads")?.unwrap_or(heads),
            head_dim: usize_of("head_dim")?.unwrap_or(hidden_size / heads),
            rms_norm_eps: f64_of("rms_norm_eps", 1e-6)?,
            rope_theta: f64_of("rope_theta", 10000.0)?,
            rope_scaling,
            tie_word_embeddings: bool_of("tie_word_embeddings", false),
            attention_bias,
            attention_out_bias: attention_bias && !qwen2,
            mlp_bias: bool_of("mlp_bias", false),
            max_position_embeddings: max_seq,
            kv_cache_batch: Dim::constant(1),
        })
    }
}
