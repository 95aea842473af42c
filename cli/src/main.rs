//! The `kiln` command-line tool.

mod inspect;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Kiln, a neural-network compiler.
#[derive(Parser)]
#[command(name = "kiln", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse and type-check an IR text file, then print it with a summary.
    Inspect {
        /// A graph in Kiln's text format (see docs/ir.md).
        file: PathBuf,
        /// Print only the summary, not the graph.
        #[arg(long)]
        summary: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Inspect { file, summary } => inspect::run(&file, summary),
    }
}
