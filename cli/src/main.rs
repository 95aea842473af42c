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
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Inspect { target, summary } => inspect::run(&target, summary),
    }
}
