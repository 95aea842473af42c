//! `kiln bench`: prompt-processing and decode speed of a model, as llama.cpp's
//! `llama-bench` measures them (pp N: a prompt of N tokens from an empty cache; tg N: N
//! single-token steps after a short prompt).

use crate::model::{self, ModelArgs};
use std::time::Instant;

/// `kiln bench`'s flags.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// The model and how to run it.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt lengths to time (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "128,512")]
    pub pp: Vec<usize>,
    /// Decode steps to time (comma-separated; 0 for none).
    #[arg(long, value_delimiter = ',', default_value = "128")]
    pub tg: Vec<usize>,
    /// Timed repetitions (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `kiln bench`.
pub fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    let mut model_args = args.model.clone();
    let longest = args.pp.iter().copied().max().unwrap_or(0);
    let steps = args.tg.iter().copied().max().unwrap_or(0);
    model_args.ctx_size = model_args.ctx_size.max(longest + 1).max(steps + 8);
    let mut session = model::open(&model_args)?;
    let lm = &mut session.lm;
    let vocab = lm.vocab_size() as u32;
    // A fixed, valid token sequence (the same ids every run).
    let ids: Vec<u32> = (0..longest.max(steps + 8))
        .map(|i| (1000 + i as u32 * 7919) % vocab)
        .collect();
    let threads = lm.threads();
    if !args.json {
        println!(
            "| test | threads | tok/s (median of {}) | runs |",
            args.reps
        );
        println!("| --- | --- | --- | --- |");
    }
    let report = |test: String, runs: Vec<f64>| {
        let mut sorted = runs.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        let runs_text: Vec<String> = runs.iter().map(|r| format!("{r:.2}")).collect();
        if args.json {
            println!(
                "{{\"test\": \"{test}\", \"threads\": {threads}, \"tok_per_s\": [{}], \"median\": {median:.3}}}",
                runs_text.join(", ")
            );
        } else {
            println!(
                "| {test} | {threads} | {median:.2} | {} |",
                runs_text.join(" ")
            );
        }
    };
    for &n in args.pp.iter().filter(|&&n| n > 0) {
        let mut runs = Vec::new();
        for rep in 0..=args.reps {
            lm.reset();
            let t = Instant::now();
            lm.forward(&ids[..n])?;
            if rep > 0 {
                runs.push(n as f64 / t.elapsed().as_secs_f64());
            }
        }
        report(format!("pp{n}"), runs);
    }
    for &n in args.tg.iter().filter(|&&n| n > 0) {
        let mut runs = Vec::new();
        for rep in 0..=args.reps {
            lm.reset();
            lm.forward(&ids[..8])?;
            let t = Instant::now();
            for &id in &ids[8..8 + n] {
                lm.forward(&[id])?;
            }
            if rep > 0 {
                runs.push(n as f64 / t.elapsed().as_secs_f64());
            }
        }
        report(format!("tg{n}"), runs);
    }
    Ok(())
}
