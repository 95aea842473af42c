//! `kiln inspect`: read an IR text file, check it, print it and summarize it.

use anyhow::Context;
use kiln_ir::{Graph, Op};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

/// Runs `kiln inspect FILE`.
pub fn run(file: &Path, summary_only: bool) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let graph = kiln_ir::text::parse_graph(&text)
        .with_context(|| format!("{} is not a valid Kiln graph", file.display()))?;
    if !summary_only {
        println!("{graph}");
    }
    print!("{}", summary(&graph));
    Ok(())
}

/// A short description of a graph: its interface, symbols and op counts.
pub fn summary(g: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "nodes: {}", g.nodes().len());
    let list = |items: Vec<(&str, kiln_ir::NodeId)>| -> Vec<String> {
        items
            .into_iter()
            .map(|(name, id)| format!("{name}: {}", g.ty(id)))
            .collect()
    };
    for (kind, items) in [
        ("inputs", list(g.inputs())),
        ("params", list(g.params())),
        ("states", list(g.states())),
    ] {
        if !items.is_empty() {
            let _ = writeln!(out, "{kind}: {}", items.join(", "));
        }
    }
    let outputs: Vec<String> = g
        .outputs()
        .iter()
        .map(|(name, id)| format!("{name}: {}", g.ty(*id)))
        .collect();
    let _ = writeln!(out, "outputs: {}", outputs.join(", "));
    let symbols = g.symbols();
    if !symbols.is_empty() {
        let _ = writeln!(out, "symbols: {}", symbols.join(", "));
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for n in g.nodes() {
        if !matches!(n.op, Op::Input { .. } | Op::Param { .. } | Op::State { .. }) {
            *counts.entry(n.op.name()).or_default() += 1;
        }
    }
    let counts: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(out, "ops: {}", counts.join(", "));
    out
}
