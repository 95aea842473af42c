//! Defines a tiny transformer with `#[kiln::model]`, traces it once with symbolic `batch` and
//! `seq`, and runs the graph on the reference interpreter at two sequence lengths with
//! deterministic pseudo-random weights; then compiles it once and runs it on the CPU backend
//! (native code from Cranelift) at the same lengths, next to the interpreter's results.
//!
//! Run: `cargo run --release -p tiny-transformer`

use kiln::ir::interp::{run, Env};
use kiln::ir::{Bindings, Tensor};
use kiln::nn::Module;
use kiln::runtime::{CpuExecutable, CpuOptions};
use tiny_transformer::{small_config, TinyTransformer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = TinyTransformer::new(&small_config());
    println!("parameters (PyTorch state_dict names):");
    for spec in model.param_specs() {
        println!("  {:<24} {}{}", spec.name, spec.dtype, spec.shape);
    }

    let graph = model.trace()?;
    println!(
        "\ntraced once: {} nodes, inputs {:?}, output logits: {}",
        graph.nodes().len(),
        graph
            .inputs()
            .iter()
            .map(|(n, id)| format!("{n}: {}", graph.ty(*id)))
            .collect::<Vec<_>>(),
        graph.ty(graph.output("logits").ok_or("no logits")?)
    );

    // Deterministic weights (this is a demonstration, not a trained model).
    let mut env = Env::new();
    let mut weights = Vec::new();
    for (i, spec) in model.param_specs().iter().enumerate() {
        let shape: Vec<usize> = spec
            .shape
            .as_consts()
            .ok_or("parameters have constant shapes")?
            .into_iter()
            .map(|d| d as usize)
            .collect();
        let n = shape.iter().product();
        // Norm weights start at 1, everything else small and random.
        let values: Vec<f32> = if spec.name.ends_with("norm.weight") {
            vec![1.0; n]
        } else {
            pseudo_random(n, i as u64)
                .into_iter()
                .map(|v| v * 0.3)
                .collect()
        };
        let t = Tensor::from_vec(shape, values)?;
        env.set_param(&spec.name, t.clone());
        weights.push((spec.name.clone(), t));
    }

    // The same graph compiled once (optimizer on) to native code for every `seq`.
    let compiled = kiln::compiler::compile(&graph, Some(&Default::default()))?;
    let mut cpu = CpuExecutable::new(&compiled, &CpuOptions::default())?;
    for (name, t) in &weights {
        cpu.set_param(name, t)?;
    }
    println!(
        "compiled for the CPU: {} kernels ({} matmuls on micro-kernels), {} threads",
        compiled.schedule.kernels.len(),
        cpu.split_matmuls(),
        cpu.threads()
    );

    let prompt: Vec<i64> = vec![3, 14, 15, 9, 26, 5];
    let mut previous: Option<Vec<f32>> = None;
    for len in [4usize, 6] {
        env.set_input(
            "ids",
            Tensor::from_vec(vec![1, len], prompt[..len].to_vec())?,
        );
        let out = run(&graph, &env)?;
        let logits = out.get("logits").ok_or("no logits")?;
        let values = logits.as_slice::<f32>()?.to_vec();
        let vocab = logits.shape()[2];
        let next: Vec<usize> = values
            .chunks(vocab)
            .map(|row| {
                (0..vocab)
                    .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                    .unwrap_or(0)
            })
            .collect();
        println!(
            "seq = {len}: logits {:?}, greedy next token at each position {next:?}",
            logits.shape()
        );
        let ids = Tensor::from_vec(vec![1, len], prompt[..len].to_vec())?;
        let native = cpu.run(&[("ids", &ids)], &Bindings::new())?;
        let native = native[0].1.as_slice::<f32>()?;
        let diff = values
            .iter()
            .zip(native)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!(
            "  CPU backend: same logits shape, max |difference| from the interpreter {diff:.2e}"
        );
        if let Some(prev) = &previous {
            // Causal: the first positions do not depend on the tokens after them.
            let same = prev.iter().zip(&values).all(|(a, b)| a == b);
            println!(
                "  the first {} positions equal the shorter run: {same}",
                prev.len() / vocab
            );
        }
        previous = Some(values);
    }
    Ok(())
}

/// Deterministic values in [-1, 1).
fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
