//! The `kiln` command-line tool.

mod bench;
mod fetch;
mod inspect;
mod logits;
mod model;
mod npy;
mod run;
mod stages;

use clap::{Parser, Subcommand};

/// Kiln, a neural-network compiler.
#[derive(Parser)]
#[command(name = "kiln", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt, streamed (default model: SmolLM2-135M-Instruct, fetched
    /// on first use). Prints prompt and generation speed.
    Run(run::RunArgs),
    /// Chat interactively, with the model's chat template.
    Chat(run::ChatArgs),
    /// Write the logits of every position of a prompt to a .npy file ([tokens, vocab]).
    Logits(logits::LogitsArgs),
    /// Perplexity over a text file, as llama.cpp's llama-perplexity computes it.
    Perplexity(logits::PerplexityArgs),
    /// Compare the model's stage outputs with reference dumps (scripts/hf_reference.py):
    /// cosine similarity and max error per stage.
    Verify(stages::VerifyArgs),
    /// Prompt-processing and decode speed (tokens/s), as llama-bench measures them.
    Bench(bench::BenchArgs),
    /// Show a graph: an IR text file, or a built-in model traced on the spot
    /// (`smollm2-135m`). Prints the graph and a summary.
    Inspect {
        /// A graph in Kiln's text format (see docs/ir.md), or a built-in model name.
        target: String,
        /// Print only the summary, not the graph.
        #[arg(long)]
        summary: bool,
        /// Compile it too (without and with the e-graph optimizer) and report kernels, bytes
        /// moved and peak memory.
        #[arg(long)]
        compile: bool,
        /// With --compile: print the e-graph rule statistics.
        #[arg(long)]
        egraph: bool,
        /// With --compile: print the optimized schedule's kernels as loop IR (what the
        /// backends generate code from).
        #[arg(long)]
        kernels: bool,
        /// With --compile: print the optimized schedule's kernels as WGSL (each validated by
        /// naga; for an adapter without subgroup operations).
        #[arg(long)]
        wgsl: bool,
        /// Symbol values for the report, e.g. `--bind seq=128 --bind past=0`; unbound symbols
        /// are 512.
        #[arg(long, value_parser = parse_binding)]
        bind: Vec<(String, i64)>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(a) => run::run(&a),
        Command::Chat(a) => run::chat(&a),
        Command::Logits(a) => logits::logits(&a),
        Command::Perplexity(a) => logits::perplexity(&a),
        Command::Verify(a) => stages::verify(&a),
        Command::Bench(a) => bench::bench(&a),
        Command::Inspect {
            target,
            summary,
            compile,
            egraph,
            kernels,
            wgsl,
            bind,
        } => inspect::run(
            &target,
            &inspect::Options {
                summary,
                compile,
                egraph,
                kernels,
                wgsl,
                bind,
            },
        ),
    }
}

/// Parses `name=value`.
fn parse_binding(s: &str) -> Result<(String, i64), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected SYMBOL=VALUE, got `{s}`"))?;
    let value = value
        .trim()
        .parse::<i64>()
        .map_err(|e| format!("`{value}` in `{s}`: {e}"))?;
    Ok((name.trim().to_string(), value))
}
