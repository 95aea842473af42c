//! `kiln inspect`: read an IR text file, check it, print it and summarize it.

use anyhow::Context;
use kiln_ir::{Graph, Op};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

/// Built-in models `kiln inspect` can trace, with what they are.
const MODELS: [(&str, &str); 1] = [(
    "smollm2-135m",
    "SmolLM2-135M, cached forward over `seq` new tokens after `past` (KV cache of 2048)",
)];

/// What `kiln inspect` prints.
pub struct Options {
    /// Only the summary, not the graph.
    pub summary: bool,
    /// Compile and report.
    pub compile: bool,
    /// Print the e-graph rule statistics.
    pub egraph: bool,
    /// Print the optimized schedule's kernels (loop IR).
    pub kernels: bool,
    /// Print the optimized schedule's kernels as WGSL.
    pub wgsl: bool,
    /// Symbol values for the report.
    pub bind: Vec<(String, i64)>,
}

/// Runs `kiln inspect TARGET`.
pub fn run(target: &str, options: &Options) -> anyhow::Result<()> {
    let graph = load(target)?;
    if !options.summary {
        println!("{graph}");
    }
    print!("{}", summary(&graph));
    if options.compile || options.egraph || options.kernels || options.wgsl {
        compile_report(&graph, options)?;
    }
    Ok(())
}

/// Compiles without and with the optimizer and prints both reports.
fn compile_report(graph: &Graph, options: &Options) -> anyhow::Result<()> {
    use kiln_compiler::egraph::OptimizeOptions;
    let mut bindings = kiln_ir::Bindings::new();
    for s in graph.symbols() {
        bindings.set(&s, 512);
    }
    for (k, v) in &options.bind {
        bindings.set(k, *v);
    }
    let values: Vec<String> = bindings.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("compiled at {}:", values.join(", "));
    let start = std::time::Instant::now();
    let plain = kiln_compiler::compile(graph, None)?;
    let t_plain = start.elapsed();
    println!(
        "  without the optimizer: {} ({:.0} ms)",
        plain.report(&bindings)?,
        t_plain.as_secs_f64() * 1e3
    );
    let start = std::time::Instant::now();
    let opt = kiln_compiler::compile(graph, Some(&OptimizeOptions::default()))?;
    let t_opt = start.elapsed();
    println!(
        "  with the optimizer:    {} ({:.0} ms)",
        opt.report(&bindings)?,
        t_opt.as_secs_f64() * 1e3
    );
    if options.egraph {
        if let Some(stats) = &opt.stats {
            println!("{stats}");
        }
    }
    if options.kernels {
        for k in &opt.schedule.kernels {
            println!("{k}");
        }
    }
    if options.wgsl {
        use kiln_compiler::backend::wgsl::{compile_kernel, Layout, Target};
        for k in &opt.schedule.kernels {
            let w = compile_kernel(k, &Layout::default(), Target::default())?;
            println!(
                "// {} workgroups of {} threads\n{}",
                w.workgroups, w.workgroup_size, w.source
            );
        }
    }
    Ok(())
}

/// The graph of an IR text file or a built-in model.
fn load(target: &str) -> anyhow::Result<Graph> {
    let path = Path::new(target);
    if !path.exists() {
        if let Some(graph) = builtin(target)? {
            return Ok(graph);
        }
        let names: Vec<String> = MODELS.iter().map(|(n, d)| format!("  {n}: {d}")).collect();
        anyhow::bail!(
            "cannot read {target}: no such file, and not a built-in model; built-in models:\n{}",
            names.join("\n")
        );
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {target}"))?;
    kiln_ir::text::parse_graph(&text).with_context(|| format!("{target} is not a valid Kiln graph"))
}

/// Traces a built-in model, if `name` is one.
fn builtin(name: &str) -> anyhow::Result<Option<Graph>> {
    use kiln_models::llama::{LlamaConfig, LlamaForCausalLM};
    let graph = match name {
        "smollm2-135m" => {
            let model = LlamaForCausalLM::new(&LlamaConfig::smollm2_135m(2048));
            let trace = kiln_nn::Trace::new();
            let ids = trace.input("ids", kiln_ir::DType::I64, kiln_nn::dims![1, "seq"]);
            trace.output("logits", &model.forward_cached(&ids));
            trace.finish()?
        }
        _ => return Ok(None),
    };
    Ok(Some(graph))
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
        match items.len() {
            0 => {}
            1..=6 => {
                let _ = writeln!(out, "{kind}: {}", items.join(", "));
            }
            n => {
                let _ = writeln!(out, "{kind}: {n}, e.g. {}, ...", items[..3].join(", "));
            }
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
