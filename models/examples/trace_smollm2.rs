//! Traces SmolLM2-135M's prefill graph and prints its size and the time it took.
//!
//! Run: `cargo run --release -p kiln-models --example trace_smollm2`

use kiln_ir::DType;
use kiln_models::llama::{LlamaConfig, LlamaForCausalLM};
use kiln_nn::{dims, Trace};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let start = std::time::Instant::now();
    let model = LlamaForCausalLM::new(&LlamaConfig::smollm2_135m(2048));
    let trace = Trace::new();
    let ids = trace.input("ids", DType::I64, dims![1, "seq"]);
    trace.output("logits", &model.forward_cached(&ids));
    let graph = trace.finish()?;
    println!(
        "SmolLM2-135M cached forward: {} nodes, {} params, {} states, traced in {:.1} ms",
        graph.nodes().len(),
        graph.params().len(),
        graph.states().len(),
        start.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
