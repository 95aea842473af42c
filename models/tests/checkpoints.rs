//! Hugging Face checkpoint directories (config.json + bf16 safetensors) of a tiny Llama
//! (untied head) and a tiny Qwen2 (Q/K/V biases, tied head), written with random weights by
//! `scripts/fixtures/tiny_checkpoints.py`: Kiln's logits at every position equal
//! transformers' (float32 over the same bf16 weights).

use kiln_models::llama::LoadedLlama;
use kiln_runtime::llm::{CausalLm, LmOptions};
use std::path::PathBuf;

fn check(name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/tiny-checkpoints")
        .join(name);
    let loaded = LoadedLlama::from_safetensors_dir(&dir, 32).expect("load the checkpoint");
    if name == "qwen2" {
        assert!(loaded.config.attention_bias && !loaded.config.attention_out_bias);
        assert!(loaded.config.tie_word_embeddings);
    }
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("expected.json")).expect("expected.json"),
    )
    .expect("JSON");
    let ids: Vec<u32> = expected["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let graphs = loaded.graphs().expect("trace");
    let mut lm =
        CausalLm::new(graphs, loaded.weights, LmOptions::default(), &mut |_| {}).expect("compile");
    let vocab = lm.vocab_size();
    // All positions at once, then the same through the cache one token at a time.
    let all = lm.all_logits(&ids).expect("run");
    lm.reset();
    let mut stepped = Vec::new();
    for &id in &ids {
        stepped.extend(lm.forward(&[id]).expect("step"));
    }
    for (pos, row) in expected["logits"].as_array().unwrap().iter().enumerate() {
        for (v, x) in row.as_array().unwrap().iter().enumerate() {
            let want = x.as_f64().unwrap();
            for (what, got) in [
                ("all", all[pos * vocab + v]),
                ("step", stepped[pos * vocab + v]),
            ] {
                assert!(
                    (got as f64 - want).abs() <= 2e-4 * (1.0 + want.abs()),
                    "{name} {what}: position {pos} token {v}: {got} vs transformers {want}"
                );
            }
        }
    }
}

#[test]
fn tiny_llama_checkpoint_matches_transformers() {
    check("llama");
}

#[test]
fn tiny_qwen2_checkpoint_matches_transformers() {
    check("qwen2");
}

#[test]
fn missing_or_bad_checkpoints_are_errors() {
    let err = LoadedLlama::from_safetensors_dir(&PathBuf::from("/nonexistent/kiln"), 8)
        .err()
        .expect("an error");
    assert!(err.to_string().contains("config.json"), "{err}");
}
