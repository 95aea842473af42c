//! Building a runnable Llama-family model from a weight file: configuration, weights under
//! their Hugging Face names, and the traced programs ([`LmGraphs`]).

use super::{gguf, LlamaConfig, LlamaForCausalLM};
use kiln_ir::{DType, Graph};
use kiln_nn::layers::RopeScaling;
use kiln_nn::{dims, Module, Trace};
use kiln_runtime::llm::LmGraphs;
use kiln_runtime::weights::gguf::GgufFile;
use kiln_runtime::weights::safetensors::SafeTensorsFile;
use kiln_runtime::weights::WeightBytes;
use kiln_runtime::weights::{WeightError, WeightTensor};
use std::collections::HashMap;
use std::path::Path;

/// An f16/bf16 tensor as f32.
fn widen(t: &WeightTensor) -> Result<WeightTensor, WeightError> {
    let values = t
        .to_tensor()?
        .to_f64_vec()
        .map_err(|e| WeightError::Shape {
            tensor: t.name.clone(),
            expected: "a float tensor".into(),
            got: e.to_string(),
        })?;
    let bytes: Vec<u8> = values
        .iter()
        .flat_map(|&v| (v as f32).to_le_bytes())
        .collect();
    Ok(WeightTensor {
        name: t.name.clone(),
        dtype: DType::F32,
        shape: t.shape.clone(),
        bytes: WeightBytes::from_vec(bytes),
    })
}

/// A Llama-family model read from a file, ready to be compiled.
pub struct LoadedLlama {
    /// Its configuration.
    pub config: LlamaConfig,
    /// The model (its parameters' declared dtypes; the file's are in `weights`).
    pub model: LlamaForCausalLM,
    /// Weights by Hugging Face name.
    pub weights: HashMap<String, WeightTensor>,
    /// Tensors in the file the model does not use.
    pub unused: Vec<String>,
}

impl LoadedLlama {
    /// Reads a GGUF file's configuration and weights (memory-mapped). The KV cache holds
    /// `max_seq` positions (at most the model's context length).
    pub fn from_gguf(file: &GgufFile, max_seq: usize) -> Result<LoadedLlama, WeightError> {
        let config = LlamaConfig::from_gguf(file, max_seq)?;
        let loaded = gguf::load_weights(file, &config)?;
        let model = LlamaForCausalLM::new(&config);
        let mut weights = HashMap::new();
        for (name, t) in loaded.tensors {
            weights.insert(name, t);
        }
        let mut unused = loaded.unmapped;
        // The RoPE factors are read into the configuration.
        if matches!(config.rope_scaling, RopeScaling::Factors(_)) {
            unused.retain(|n| n != super::config::ROPE_FREQS);
        }
        let keys: std::collections::HashSet<String> = model.state_dict_keys().into_iter().collect();
        for (name, t) in &weights {
            if !keys.contains(name) {
                unused.push(t.name.clone());
            }
        }
        for key in &keys {
            let tied_head = config.tie_word_embeddings && key == "lm_head.weight";
            if !weights.contains_key(key) && !tied_head {
                return Err(WeightError::MissingTensor {
                    file: file.name().to_string(),
                    tensor: key.clone(),
                });
            }
        }
        Ok(LoadedLlama {
            config,
            model,
            weights,
            unused,
        })
    }

    /// Reads a Hugging Face checkpoint directory: `config.json` and `model.safetensors` (or
    /// shards with `model.safetensors.index.json`), memory-mapped. f16 and bf16 weights are
    /// widened to f32 (copied).
    pub fn from_safetensors_dir(dir: &Path, max_seq: usize) -> Result<LoadedLlama, WeightError> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|source| WeightError::Io {
            path: cfg_path.clone(),
            source,
        })?;
        let name = cfg_path.display().to_string();
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| WeightError::Malformed {
                file: name.clone(),
                offset: 0,
                what: format!("invalid JSON: {e}"),
            })?;
        let config = LlamaConfig::from_hf_json(&json, &name, max_seq)?;
        let file = SafeTensorsFile::open_dir(dir)?;
        let model = LlamaForCausalLM::new(&config);
        let mut weights = HashMap::new();
        for key in model.state_dict_keys() {
            if config.tie_word_embeddings && key == "lm_head.weight" {
                continue;
            }
            let t = file.tensor(&key)?;
            let t = match t.dtype {
                DType::F16 | DType::BF16 => widen(&t)?,
                _ => t,
            };
            weights.insert(key, t);
        }
        let keys: std::collections::HashSet<String> = weights.keys().cloned().collect();
        let unused = file
            .names()
            .into_iter()
            .filter(|n| !keys.contains(*n))
            .map(str::to_string)
            .collect();
        Ok(LoadedLlama {
            config,
            model,
            weights,
            unused,
        })
    }

    /// The dtypes of the weights, for tracing (`Trace::with_param_dtypes`).
    pub fn param_dtypes(&self) -> HashMap<String, DType> {
        self.weights
            .iter()
            .map(|(n, t)| (n.clone(), t.dtype))
            .collect()
    }

    /// The programs generation runs: prompt (last logits), step, all logits, stages.
    pub fn graphs(&self) -> Result<LmGraphs, kiln_nn::TraceError> {
        let m = &self.model;
        let prompt = self.trace("seq".into(), |ids| m.forward_cached_last(ids))?;
        let step = self.trace(1.into(), |ids| m.forward_cached_last(ids))?;
        let all = self.trace("seq".into(), |ids| m.forward_cached(ids))?;
        let stages = {
            let tr = Trace::with_param_dtypes(self.param_dtypes());
            let ids = tr.input("ids", DType::I64, dims![1, "seq"]);
            for (name, t) in m.forward_stages(&ids) {
                tr.output(&name, &t);
            }
            tr.finish()?
        };
        Ok(LmGraphs {
            prompt,
            step,
            all,
            stages: Some(stages),
        })
    }

    fn trace(
        &self,
        seq: kiln_ir::Dim,
        f: impl Fn(&kiln_nn::Tensor) -> kiln_nn::Tensor,
    ) -> Result<Graph, kiln_nn::TraceError> {
        let tr = Trace::with_param_dtypes(self.param_dtypes());
        let ids = tr.input("ids", DType::I64, dims![1, seq]);
        tr.output("logits", &f(&ids));
        tr.finish()
    }
}
