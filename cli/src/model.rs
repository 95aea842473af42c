//! Opening a model for the commands that run one: the file, its tokenizer, the compiled
//! programs, with progress shown on the terminal.

use crate::fetch;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use kiln_models::llama::LoadedLlama;
use kiln_runtime::llm::{CausalLm, LmOptions, Session};
use kiln_runtime::tokenizer::Tokenizer;
use kiln_runtime::weights::gguf::GgufFile;
use std::path::PathBuf;
use std::time::Instant;

/// Options shared by every command that runs a model.
#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// A GGUF file, or a Hugging Face checkpoint directory (config.json, *.safetensors,
    /// tokenizer.json). Default: SmolLM2-135M-Instruct (Q4_1 GGUF), fetched on first use.
    pub model: Option<PathBuf>,
    /// Where to run: `cpu`, `wgpu` (the best GPU adapter, or the one `KILN_DEVICE=wgpu:N`
    /// names), `wgpu:N` (adapter index) or `wgpu:NAME` (part of its name).
    #[arg(long, default_value = "cpu")]
    pub device: kiln_runtime::Device,
    /// Worker threads (0: one per core).
    #[arg(short = 't', long, default_value_t = 0)]
    pub threads: usize,
    /// Context size: positions the KV cache holds (at most the model's context length).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 2048)]
    pub ctx_size: usize,
    /// Exact matmuls (dequantized weights, f64 accumulation): slow, for checking numerics.
    #[arg(long)]
    pub exact: bool,
    /// Decode multiplies the f32 activations with the quantized weights (exact to f32
    /// rounding) instead of quantizing them to 8 bits per block as llama.cpp does (the
    /// default: faster, about 0.4% RMS error per product).
    #[arg(long)]
    pub f32_activations: bool,
}

/// Opens the model: memory-maps the file, builds the tokenizer, traces and compiles.
pub fn open(args: &ModelArgs) -> anyhow::Result<Session> {
    let path = fetch::resolve(args.model.as_deref())?;
    let start = Instant::now();
    let bar = ProgressBar::new(4).with_style(
        ProgressStyle::with_template("{spinner} [{bar:20}] {pos}/{len} {msg} ({elapsed})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    bar.set_message(format!("loading {}", path.display()));
    let (loaded, tokenizer) = if path.is_dir() {
        // A Hugging Face checkpoint: config.json, safetensors, tokenizer.json.
        let loaded = LoadedLlama::from_safetensors_dir(&path, args.ctx_size.max(1))?;
        let config = path.join("tokenizer_config.json");
        let tokenizer = Tokenizer::from_file(
            &path.join("tokenizer.json"),
            config.exists().then_some(config.as_path()),
        )
        .with_context(|| format!("building the tokenizer of {}", path.display()))?;
        (loaded, tokenizer)
    } else {
        let file = GgufFile::open(&path)?;
        let loaded = LoadedLlama::from_gguf(&file, args.ctx_size.max(1))?;
        let tokenizer = Tokenizer::from_gguf(&file)
            .with_context(|| format!("building the tokenizer of {}", path.display()))?;
        (loaded, tokenizer)
    };
    let graphs = loaded.graphs()?;
    bar.inc(1);
    let options = LmOptions {
        device: args.device.clone(),
        threads: args.threads,
        no_optimize: false,
        exact: args.exact,
        f32_activations: args.f32_activations,
    };
    let lm = CausalLm::new(graphs, loaded.weights, options, &mut |phase| {
        bar.set_message(phase.to_string());
        if phase != "compile prompt" {
            bar.inc(1);
        }
    })?;
    bar.inc(1);
    bar.finish_and_clear();
    eprintln!(
        "kiln: {} ({} layers, vocab {}, context {}) ready in {:.2} s on {}",
        path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into()
        ),
        loaded.config.num_hidden_layers,
        lm.vocab_size(),
        lm.capacity(),
        start.elapsed().as_secs_f64(),
        lm.device()
    );
    Ok(Session::new(lm, tokenizer))
}
