//! How long the compiler's stages take on SmolLM2-135M's graph (30 layers, 5243 traced nodes):
//! tracing, the e-graph optimizer, and the scheduler.

use criterion::{criterion_group, criterion_main, Criterion};
use kiln_compiler::egraph::{optimize, OptimizeOptions};
use kiln_compiler::schedule::schedule;
use kiln_ir::{DType, Graph};
use kiln_models::llama::{LlamaConfig, LlamaForCausalLM};
use kiln_nn::{dims, Trace};

fn smollm2_graph(model: &LlamaForCausalLM) -> Graph {
    let trace = Trace::new();
    let ids = trace.input("ids", DType::I64, dims![1, "seq"]);
    trace.output("logits", &model.forward_cached(&ids));
    trace.finish().expect("trace")
}

fn bench(c: &mut Criterion) {
    let model = LlamaForCausalLM::new(&LlamaConfig::smollm2_135m(2048));
    let graph = smollm2_graph(&model);
    let mut group = c.benchmark_group("smollm2-135m");
    group.sample_size(10);
    group.bench_function("trace", |b| b.iter(|| smollm2_graph(&model)));
    group.bench_function("optimize", |b| {
        b.iter(|| optimize(&graph, &OptimizeOptions::default()).expect("optimize"))
    });
    let optimized = optimize(&graph, &OptimizeOptions::default())
        .expect("optimize")
        .graph;
    group.bench_function("schedule (optimized graph)", |b| {
        b.iter(|| schedule(&optimized).expect("schedule"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
