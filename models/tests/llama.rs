//! The tiny Llama against Hugging Face's `LlamaForCausalLM` (float64 reference, random weights;
//! `scripts/fixtures/make_nn_attention_fixtures.py`), tied and untied: the state_dict keys,
//! the full forward, and cached decoding step by step.
//!
//! Tolerance: `rtol 1e-5`, `atol 1e-6` on the logits (Kiln computes in f32 on the reference
//! interpreter, each op rounded to f32).

#[path = "../../nn/tests/common/mod.rs"]
mod common;

use common::{assert_close, Fixture};
use kiln_ir::interp::{run, Env};
use kiln_ir::{DType, Dim, Graph, Tensor as Value};
use kiln_models::llama::{LlamaConfig, LlamaForCausalLM};
use kiln_nn::layers::RopeScaling;
use kiln_nn::{dims, Module, Trace};
use serde_json::Value as Json;

const RTOL: f64 = 1e-5;
const ATOL: f64 = 1e-6;
const PROMPT: usize = 5;

struct Case {
    name: String,
    meta: Json,
    fixture: &'static Fixture,
}

fn fixture() -> &'static Fixture {
    static F: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    F.get_or_init(|| common::load("llama_tiny.safetensors"))
}

fn case(name: &str) -> Case {
    let meta = fixture()
        .meta
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"))
        .clone();
    Case {
        name: name.to_string(),
        meta,
        fixture: fixture(),
    }
}

impl Case {
    fn usize(&self, key: &str) -> usize {
        self.meta[key].as_u64().unwrap() as usize
    }

    /// The config; the KV caches get a symbolic batch for one case and a constant for the
    /// other, so both are exercised.
    fn config(&self) -> LlamaConfig {
        LlamaConfig {
            vocab_size: self.usize("vocab_size"),
            hidden_size: self.usize("hidden_size"),
            intermediate_size: self.usize("intermediate_size"),
            num_hidden_layers: self.usize("num_hidden_layers"),
            num_attention_heads: self.usize("num_attention_heads"),
            num_key_value_heads: self.usize("num_key_value_heads"),
            head_dim: self.usize("head_dim"),
            rms_norm_eps: self.meta["rms_norm_eps"].as_f64().unwrap(),
            rope_theta: self.meta["rope_theta"].as_f64().unwrap(),
            rope_scaling: RopeScaling::None,
            tie_word_embeddings: self.meta["tie_word_embeddings"].as_bool().unwrap(),
            attention_bias: self.meta["attention_bias"].as_bool().unwrap(),
            attention_out_bias: self.meta["attention_bias"].as_bool().unwrap(),
            mlp_bias: false,
            max_position_embeddings: self.usize("max_position_embeddings"),
            kv_cache_batch: if self.name == "tied" {
                Dim::from(2)
            } else {
                Dim::symbol("batch")
            },
        }
    }

    fn keys(&self) -> Vec<String> {
        let keys = self.meta["keys"].as_array().unwrap();
        keys.iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect()
    }

    fn get(&self, what: &str) -> &Value {
        self.fixture.get(&format!("{}.{what}", self.name))
    }

    fn params(&self) -> Vec<(String, Value)> {
        self.fixture.with_prefix(&format!("{}.p.", self.name))
    }
}

fn trace_lm(model: &LlamaForCausalLM, cached: bool) -> Graph {
    let tr = Trace::new();
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

fn params_env(c: &Case) -> Env {
    let mut env = Env::new();
    for (k, v) in c.params() {
        env.set_param(&k, v);
    }
    env
}

/// Positions `start..end` of axis 1 (ids `[b, s]` or logits `[b, s, v]`).
fn narrow1(t: &Value, start: usize, end: usize) -> Value {
    let shape = t.shape().to_vec();
    let inner: usize = shape[2..].iter().product();
    let n = shape[1];
    let idx: Vec<usize> = (0..shape[0])
        .flat_map(|i| (start * inner..end * inner).map(move |j| i * n * inner + j))
        .collect();
    let mut new_shape = shape;
    new_shape[1] = end - start;
    match t.dtype() {
        DType::I64 => {
            let d = t.as_slice::<i64>().unwrap();
            Value::from_vec(new_shape, idx.iter().map(|&i| d[i]).collect::<Vec<_>>()).unwrap()
        }
        DType::F32 => {
            let d = t.as_slice::<f32>().unwrap();
            Value::from_vec(new_shape, idx.iter().map(|&i| d[i]).collect::<Vec<_>>()).unwrap()
        }
        other => panic!("narrow1 of {other}"),
    }
}

#[test]
fn state_dict_keys_equal_hugging_faces() {
    for name in ["untied", "tied"] {
        let c = case(name);
        let model = LlamaForCausalLM::new(&c.config());
        assert_eq!(model.state_dict_keys(), c.keys(), "{name}");
        // Hugging Face lists lm_head.weight even when it is the embedding.
        assert!(c.keys().contains(&"lm_head.weight".to_string()));
    }
}

#[test]
fn every_layer_owns_a_fixed_capacity_kv_cache() {
    let c = case("tied");
    let model = LlamaForCausalLM::new(&c.config());
    let mut states = Vec::new();
    model.visit_states(&mut |s| states.push(format!("{} {}", s.name(), s.shape())));
    assert_eq!(
        states,
        [
            "model.layers.0.self_attn.k [2, 2, 16, 8]",
            "model.layers.0.self_attn.v [2, 2, 16, 8]",
            "model.layers.1.self_attn.k [2, 2, 16, 8]",
            "model.layers.1.self_attn.v [2, 2, 16, 8]",
        ]
    );
    assert_eq!(model.kv_caches().len(), 2);
    // The cache-free graph reads no state; the cached one updates every cache.
    assert!(trace_lm(&model, false).state_updates().is_empty());
    let updated: Vec<String> = trace_lm(&model, true)
        .state_updates()
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(updated.len(), 4, "{updated:?}");
}

#[test]
fn full_forward_matches_hugging_face() {
    for name in ["untied", "tied"] {
        let c = case(name);
        let model = LlamaForCausalLM::new(&c.config());
        let graph = trace_lm(&model, false);
        if c.meta["tie_word_embeddings"].as_bool().unwrap() {
            let reads_head = graph.nodes().iter().any(
                |n| matches!(&n.op, kiln_ir::Op::Param { name, .. } if name == "lm_head.weight"),
            );
            assert!(!reads_head, "tied: the logits use the embedding");
        }
        let env = params_env(&c).input("ids", c.get("ids").clone());
        let out = run(&graph, &env).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_close(
            name,
            out.get("logits").unwrap(),
            c.get("logits"),
            RTOL,
            ATOL,
        );
    }
}

#[test]
fn cached_decode_equals_the_full_forward() {
    for name in ["untied", "tied"] {
        let c = case(name);
        let model = LlamaForCausalLM::new(&c.config());
        let ids = c.get("ids");
        let (b, total) = (ids.shape()[0], ids.shape()[1]);

        let full = run(
            &trace_lm(&model, false),
            &params_env(&c).input("ids", ids.clone()),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let full = full.get("logits").unwrap();

        // One graph for the prompt and every step: `past` and `seq` are symbols.
        let graph = trace_lm(&model, true);
        let (kv, hd, cap) = (
            c.usize("num_key_value_heads"),
            c.usize("head_dim"),
            c.usize("max_position_embeddings"),
        );
        let zeros = Value::from_vec(vec![b, kv, cap, hd], vec![0f32; b * kv * cap * hd]).unwrap();
        let mut states: Vec<(String, Value)> = Vec::new();
        model.visit_states(&mut |s| states.push((s.name().to_string(), zeros.clone())));

        let mut past = 0;
        for step in [PROMPT, 1, 1, 1] {
            let mut env = params_env(&c)
                .input("ids", narrow1(ids, past, past + step))
                .bind("past", past as i64);
            for (k, v) in &states {
                env.set_state(k, v.clone());
            }
            let out = run(&graph, &env).unwrap_or_else(|e| panic!("{name} past={past}: {e}"));
            let logits = out.get("logits").unwrap();
            let what = format!("{name} past={past}");
            assert_close(
                &format!("{what} vs full forward"),
                logits,
                &narrow1(full, past, past + step),
                RTOL,
                ATOL,
            );
            assert_close(
                &format!("{what} vs Hugging Face"),
                logits,
                &narrow1(c.get("logits"), past, past + step),
                RTOL,
                ATOL,
            );
            // The returned cache state is the next step's input.
            for (k, v) in states.iter_mut() {
                *v = out
                    .state(k)
                    .unwrap_or_else(|| panic!("{what}: no new value for {k}"))
                    .clone();
                assert_eq!(v.shape(), [b, kv, cap, hd]);
            }
            past += step;
        }
        assert_eq!(past, total);
    }
}
