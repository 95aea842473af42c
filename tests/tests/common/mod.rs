//! A tiny Llama shared by the end-to-end tests.
#![allow(dead_code)]

use kiln_ir::{DType, Dim, Graph, Tensor};
use kiln_models::llama::{LlamaConfig, LlamaForCausalLM};
use kiln_nn::layers::RopeScaling;
use kiln_nn::{dims, Module, Trace};

/// 2 layers, width 32, 4 query and 2 key/value heads, a 61-token vocabulary.
pub fn tiny() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 61,
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 8,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        rope_scaling: RopeScaling::None,
        tie_word_embeddings: true,
        attention_bias: false,
        attention_out_bias: false,
        mlp_bias: false,
        max_position_embeddings: 16,
        kv_cache_batch: Dim::constant(1),
    }
}

/// The model's `forward` over ids `[1, seq]`, output `logits`.
pub fn traced(model: &LlamaForCausalLM) -> Graph {
    let trace = Trace::new();
    let ids = trace.input("ids", DType::I64, dims![1, "seq"]);
    trace.output("logits", &model.forward(&ids));
    trace.finish().expect("trace")
}

/// Deterministic small weights for every parameter.
pub fn weights(model: &LlamaForCausalLM) -> Vec<(String, Tensor)> {
    model
        .param_specs()
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let shape: Vec<usize> = spec
                .shape
                .as_consts()
                .unwrap()
                .iter()
                .map(|&d| d as usize)
                .collect();
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n)
                .map(|j| {
                    let h = (i as u64 * 7919 + j as u64 * 104729) % 1009;
                    (h as f32 / 1009.0 - 0.5) * 0.4
                        + if spec.name.ends_with("norm.weight") {
                            1.0
                        } else {
                            0.0
                        }
                })
                .collect();
            (spec.name.clone(), Tensor::from_vec(shape, values).unwrap())
        })
        .collect()
}
