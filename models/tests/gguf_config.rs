//! `LlamaConfig::from_gguf` on small GGUF files written by the runtime's test writer: the
//! per-frequency RoPE factors of Llama 3.1 files (`rope_freqs.weight`) and the errors for bad
//! ones.

#[path = "../../runtime/tests/support/gguf_writer.rs"]
mod gguf_writer;

use gguf_writer::{ggml, GgufWriter, TensorSpec};
use kiln_models::llama::LlamaConfig;
use kiln_nn::layers::RopeScaling;
use kiln_runtime::weights::gguf::{GgufFile, MetaValue};
use kiln_runtime::weights::{FileBytes, WeightError};

/// A 2-layer Llama file's metadata with 4 heads of 16 dims (8 rotated pairs), no tensors.
fn llama_meta() -> GgufWriter {
    GgufWriter::new()
        .kv("general.architecture", MetaValue::String("llama".into()))
        .kv("llama.block_count", MetaValue::U32(2))
        .kv("llama.embedding_length", MetaValue::U32(64))
        .kv("llama.feed_forward_length", MetaValue::U32(128))
        .kv("llama.attention.head_count", MetaValue::U32(4))
        .kv("llama.attention.head_count_kv", MetaValue::U32(2))
        .kv("llama.vocab_size", MetaValue::U32(100))
        .kv("llama.rope.freq_base", MetaValue::F32(500000.0))
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn config(w: &GgufWriter) -> Result<LlamaConfig, WeightError> {
    let file = GgufFile::parse(FileBytes::from_vec(w.build()), "llama31.gguf")?;
    LlamaConfig::from_gguf(&file, 64)
}

#[test]
fn rope_freqs_become_frequency_factors() {
    let factors = [1.0f32, 1.0, 1.5, 2.0, 4.0, 8.0, 8.0, 8.0];
    let w = llama_meta().tensor(TensorSpec::new(
        "rope_freqs.weight",
        &[8],
        ggml::F32,
        f32_bytes(&factors),
    ));
    let cfg = config(&w).unwrap();
    assert_eq!(cfg.rope_scaling, RopeScaling::Factors(factors.into()));
    // Without the tensor: plain RoPE.
    assert_eq!(
        config(&llama_meta()).unwrap().rope_scaling,
        RopeScaling::None
    );
}

#[test]
fn bad_rope_freqs_are_errors_naming_the_tensor() {
    let cases: Vec<(TensorSpec, &str)> = vec![
        (
            TensorSpec::new("rope_freqs.weight", &[4], ggml::F32, f32_bytes(&[1.0; 4])),
            "f32[8]",
        ),
        (
            TensorSpec::new("rope_freqs.weight", &[8], ggml::F16, vec![0; 16]),
            "f32[8]",
        ),
        (
            TensorSpec::new(
                "rope_freqs.weight",
                &[8],
                ggml::F32,
                f32_bytes(&[1.0, 1.0, -2.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
            ),
            "factor 2 is -2",
        ),
    ];
    for (t, needle) in cases {
        let e = config(&llama_meta().tensor(t)).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("rope_freqs.weight") && msg.contains(needle),
            "{msg}"
        );
    }
    // Linear scaling and factors together: refused, naming the key.
    let w = llama_meta()
        .kv(
            "llama.rope.scaling.type",
            MetaValue::String("linear".into()),
        )
        .kv("llama.rope.scaling.factor", MetaValue::F32(2.0))
        .tensor(TensorSpec::new(
            "rope_freqs.weight",
            &[8],
            ggml::F32,
            f32_bytes(&[1.0; 8]),
        ));
    let msg = config(&w).unwrap_err().to_string();
    assert!(msg.contains("rope.scaling.type"), "{msg}");
}
