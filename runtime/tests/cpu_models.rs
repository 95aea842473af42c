//! A tiny Llama from `kiln-models` on the CPU backend against the reference interpreter:
//! the full forward at several sequence lengths (one compilation), cached decoding step by
//! step with the runtime carrying the KV caches, a variant with biases, untied embeddings and
//! a symbolic cache batch of 2, and one with Q8_0 weights; optimizer off and on, 1 and 2
//! threads. Tolerance as in `cpu_fused.rs` (bit-identical today).

mod common;

use common::{check_decode, check_runs, module_weights, tensor_i64, zero_states, Feeds, Rng, Tol};
use kiln_ir::{DType, Dim, Graph, QuantType, Tensor};
use kiln_models::llama::{LlamaConfig, LlamaForCausalLM};
use kiln_nn::layers::RopeScaling;
use kiln_nn::{dims, Module, Trace};

/// 2 layers, width 32, 4 query and 2 key/value heads, a 61-token vocabulary, 16 positions.
fn tiny() -> LlamaConfig {
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

/// Untied embeddings, biases everywhere, a KV cache batch bound at run time (`batch`).
fn tiny_with_biases() -> LlamaConfig {
    LlamaConfig {
        tie_word_embeddings: false,
        attention_bias: true,
        attention_out_bias: true,
        mlp_bias: true,
        kv_cache_batch: Dim::symbol("batch"),
        ..tiny()
    }
}

fn trace(model: &LlamaForCausalLM, cached: bool, dtypes: &[(String, DType)]) -> Graph {
    let tr = Trace::with_param_dtypes(dtypes.iter().cloned().collect());
    let batch = model.config.kv_cache_batch.clone();
    let ids = tr.input("ids", DType::I64, dims![batch, "seq"]);
    let logits = if cached {
        model.forward_cached(&ids)
    } else {
        model.forward(&ids)
    };
    tr.output("logits", &logits);
    tr.finish().unwrap_or_else(|e| panic!("trace: {e}"))
}

fn ids(batch: usize, seq: usize, rng: &mut Rng) -> Tensor {
    let v: Vec<i64> = (0..batch * seq).map(|_| rng.below(61) as i64).collect();
    tensor_i64(DType::I64, &[batch, seq], &v)
}

/// The model's weights for the params `g` reads (with tied embeddings the model lists
/// `lm_head.weight`, which the graph never declares: the CPU executable refuses unknown
/// names, so a loader passes only the graph's params).
fn graph_weights(g: &Graph, all: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    let declared: Vec<&str> = g.params().into_iter().map(|(n, _)| n).collect();
    all.into_iter()
        .filter(|(n, _)| declared.contains(&n.as_str()))
        .collect()
}

fn tol(_: &str) -> Tol {
    Tol::Close {
        rel: 1e-5,
        abs: 1e-5,
    }
}

/// The uncached forward at 1, 5 and 16 tokens, compiled once.
#[test]
fn tiny_llama_forward() {
    let model = LlamaForCausalLM::new(&tiny());
    let g = trace(&model, false, &[]);
    let weights = graph_weights(&g, module_weights(&model, &mut Rng(60), 0.2, &|_| None));
    let mut rng = Rng(61);
    let runs: Vec<Feeds> = [1usize, 5, 16]
        .iter()
        .map(|&s| {
            let mut f = Feeds::new().input("ids", ids(1, s, &mut rng));
            f.params = weights.clone();
            f
        })
        .collect();
    check_runs("tiny llama forward", &g, &runs, &|n, _| tol(n));
}

/// Cached decoding: a 5-token prompt, single tokens, a 2-token chunk; the runtime keeps the
/// KV caches between steps.
fn decode(cfg: &LlamaConfig, batch: usize, dtypes: &dyn Fn(&str) -> Option<DType>, label: &str) {
    decode_with(cfg, batch, dtypes, label, &tol)
}

/// Logits through block-quantized weights: the backend multiplies them with the f32
/// activations, exact to f32 rounding, so the f32 bound holds. With `KILN_Q8_ACTIVATIONS=1`
/// it quantizes the activations to 8 bits per block (as llama.cpp does), about 0.4% RMS per
/// product (`cpu_smoke.rs` checks one product); through 14 such products, two RMSNorms and
/// attention the logits of this tiny random model move by about 5% RMS. A wrong layout or
/// scale moves them by ~100%.
fn quantized_tol(n: &str) -> Tol {
    if common::q8_activations() {
        Tol::RelRms(1e-1)
    } else {
        tol(n)
    }
}

fn decode_with(
    cfg: &LlamaConfig,
    batch: usize,
    dtypes: &dyn Fn(&str) -> Option<DType>,
    label: &str,
    tol: &dyn Fn(&str) -> Tol,
) {
    let model = LlamaForCausalLM::new(cfg);
    let specs = model.param_specs();
    let quantized: Vec<(String, DType)> = specs
        .iter()
        .filter_map(|s| dtypes(&s.name).map(|d| (s.name.clone(), d)))
        .collect();
    let g = trace(&model, true, &quantized);
    assert_eq!(g.state_updates().len(), 2 * cfg.num_hidden_layers);
    common::assert_updates_in_place(&g);
    let weights = graph_weights(&g, module_weights(&model, &mut Rng(62), 0.2, dtypes));
    let states = zero_states(&model, batch as i64);
    let mut rng = Rng(63);
    let mut past = 0;
    let steps: Vec<Feeds> = [5usize, 1, 1, 2, 1]
        .iter()
        .map(|&s| {
            let f = Feeds::new()
                .input("ids", ids(batch, s, &mut rng))
                .bind("past", past);
            past += s as i64;
            f
        })
        .collect();
    check_decode(label, &g, &weights, &states, &steps, tol);
}

#[test]
fn tiny_llama_cached_decode() {
    decode(&tiny(), 1, &|_| None, "tiny llama decode");
}

#[test]
fn tiny_llama_with_biases_batch_2_cached_decode() {
    decode(
        &tiny_with_biases(),
        2,
        &|_| None,
        "tiny llama (biases, batch 2) decode",
    );
}

/// Every projection weight in Q8_0 (dequantized in the matmul prologues). The embedding
/// table stays f32: the nn `Embedding` reshapes the looked-up rows, which a quantized
/// table does not allow.
#[test]
fn tiny_llama_q8_0_cached_decode() {
    let cfg = LlamaConfig {
        intermediate_size: 64,
        ..tiny()
    };
    let q8 = |name: &str| {
        name.ends_with("proj.weight")
            .then_some(DType::Quant(QuantType::Q8_0))
    };
    decode_with(&cfg, 1, &q8, "tiny llama q8_0 decode", &quantized_tol);
}
