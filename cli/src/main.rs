//! The `kiln` command-line tool.

mod inspect;

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
        /// Symbol values for the report, e.g. `--bind seq=128 --bind past=0`; unbound symbols
        /// are 512.
        #[arg(long, value_parser = parse_binding)]
        bind: Vec<(String, i64)>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Inspect {
            target,
            summary,
            compile,
            egraph,
            bind,
        } => inspect::run(
            &target,
            &inspect::Options {
                summary,
                compile,
                egraph,
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
