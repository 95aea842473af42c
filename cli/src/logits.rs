//! `kiln logits` (every position's logits to a `.npy` file) and `kiln perplexity`
//! (perplexity over a text file, computed as llama.cpp's `llama-perplexity` does).

use crate::model::{self, ModelArgs};
use crate::npy;
use anyhow::{bail, Context};
use std::path::PathBuf;

/// `kiln logits`' flags.
#[derive(clap::Args, Debug)]
pub struct LogitsArgs {
    /// The model and how to run it.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text to tokenize (as is: no chat template; BOS if the model's metadata asks).
    #[arg(short = 'p', long, conflicts_with = "ids")]
    pub prompt: Option<String>,
    /// Token ids, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub ids: Vec<u32>,
    /// Output file (float32 `[tokens, vocab]`).
    #[arg(short = 'o', long)]
    pub output: PathBuf,
}

/// Runs `kiln logits`.
pub fn logits(args: &LogitsArgs) -> anyhow::Result<()> {
    let mut session = model::open(&args.model)?;
    let ids = match &args.prompt {
        Some(p) => session.tokenizer.encode(p, true)?,
        None => args.ids.clone(),
    };
    if ids.is_empty() {
        bail!("no tokens: give --prompt or --ids");
    }
    let vocab = session.lm.vocab_size();
    let logits = session.lm.all_logits(&ids)?;
    npy::write_f32(&args.output, &[ids.len(), vocab], &logits)?;
    eprintln!(
        "kiln: wrote logits [{}, {vocab}] to {}",
        ids.len(),
        args.output.display()
    );
    Ok(())
}

/// `kiln perplexity`'s flags.
#[derive(clap::Args, Debug)]
pub struct PerplexityArgs {
    /// The model and how to run it (`--ctx-size` is the chunk length, default 512 here).
    #[command(flatten)]
    pub model: ModelArgs,
    /// A text file (`kiln perplexity FILE` uses the default model).
    pub file: Option<PathBuf>,
    /// Tokens per chunk (llama-perplexity's `-c`).
    #[arg(long = "chunk", default_value_t = 512)]
    pub chunk: usize,
    /// Evaluate at most this many chunks (0: all).
    #[arg(long = "chunks", default_value_t = 0)]
    pub chunks: usize,
}

/// Runs `kiln perplexity`: the text is tokenized once (BOS as the model's metadata says),
/// cut into chunks of `--chunk` tokens; each chunk runs from an empty cache (with BOS as
/// its first token when the model uses one) and only the second half of each chunk's
/// predictions is scored, as llama-perplexity does. Prints the running estimate per chunk
/// and the final perplexity with its standard error.
pub fn perplexity(args: &PerplexityArgs) -> anyhow::Result<()> {
    let mut model_args = args.model.clone();
    let file = match &args.file {
        Some(f) => f.clone(),
        // One path given: it is the text, the model is the default one.
        None => model_args
            .model
            .take()
            .context("give a text file: kiln perplexity [MODEL] FILE")?,
    };
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    model_args.ctx_size = model_args.ctx_size.max(args.chunk);
    let mut session = model::open(&model_args)?;
    let tokens = session.tokenizer.encode(&text, false)?;
    let n = args.chunk;
    if n < 2 || tokens.len() < n {
        bail!(
            "{} has {} tokens; a chunk needs {n} (use --chunk to lower it)",
            file.display(),
            tokens.len()
        );
    }
    let mut chunks = tokens.len() / n;
    if args.chunks > 0 {
        chunks = chunks.min(args.chunks);
    }
    let bos = session
        .tokenizer
        .bos()
        .filter(|_| session.tokenizer.adds_bos());
    let vocab = session.lm.vocab_size();
    let first = n / 2;
    let (mut nll, mut nll2, mut count) = (0.0f64, 0.0f64, 0usize);
    let start = std::time::Instant::now();
    eprintln!("kiln: {} tokens, {chunks} chunks of {n}", tokens.len());
    for c in 0..chunks {
        let mut ids = tokens[c * n..(c + 1) * n].to_vec();
        if let Some(b) = bos {
            ids[0] = b;
        }
        session.reset();
        let logits = session.lm.all_logits(&ids)?;
        for i in first..n - 1 {
            let row = &logits[i * vocab..(i + 1) * vocab];
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&v| (v as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            let l = lse - row[ids[i + 1] as usize] as f64;
            nll += l;
            nll2 += l * l;
            count += 1;
        }
        print!("[{}]{:.4},", c + 1, (nll / count as f64).exp());
        std::io::Write::flush(&mut std::io::stdout())?;
    }
    println!();
    let mean = nll / count as f64;
    let var = (nll2 / count as f64 - mean * mean).max(0.0);
    let ppl = mean.exp();
    let err = ppl * (var / (count as f64 - 1.0).max(1.0)).sqrt();
    println!("Final estimate: PPL = {ppl:.4} +/- {err:.5}");
    eprintln!(
        "kiln: {count} tokens scored in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
