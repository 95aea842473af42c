//! SmolLM2-135M's graph (30 layers, traced from the nn library) through the whole compiler:
//! the fusions and merges `docs/compiler.md` reports, counted on the real shapes.

use kiln_compiler::egraph::OptimizeOptions;
use kiln_compiler::loop_ir::{BufferRole, KernelKind};
use kiln_ir::{DType, Dim, Op};
use kiln_models::llama::{LlamaConfig, LlamaForCausalLM};
use kiln_nn::{dims, Trace};

#[test]
fn smollm2_compiles_to_the_documented_kernels() {
    let config = LlamaConfig::smollm2_135m(2048);
    let layers = config.num_hidden_layers;
    let model = LlamaForCausalLM::new(&config);
    let trace = Trace::new();
    let ids = trace.input("ids", DType::I64, dims![1, "seq"]);
    trace.output("logits", &model.forward_cached(&ids));
    let graph = trace.finish().unwrap();
    let compiled = kiln_compiler::compile(&graph, Some(&OptimizeOptions::default())).unwrap();
    let g = &compiled.graph;
    let matmuls = g
        .nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::MatMul { .. }))
        .count();
    // Per layer: merged q/k/v, scores, probs @ v, o_proj, merged gate/up, down; plus the head.
    assert_eq!(matmuls, 6 * layers + 1);
    // No permute feeds a matmul: transposes became operand flags.
    let permuted_operands = g
        .nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::MatMul { .. }))
        .flat_map(|n| n.inputs.iter())
        .filter(|i| matches!(g.node(**i).op, Op::Permute { .. }))
        .count();
    assert_eq!(permuted_operands, 0);
    let kernels = &compiled.schedule.kernels;
    let text: Vec<String> = kernels.iter().map(|k| k.to_string()).collect();
    let reductions_with = |needle: &str| {
        kernels
            .iter()
            .zip(&text)
            .filter(|(k, t)| k.kind == KernelKind::Reduction && t.contains(needle))
            .count()
    };
    // One row kernel per attention softmax, one per RMSNorm (2 per layer and the final one).
    assert_eq!(reductions_with("exp."), layers);
    assert_eq!(reductions_with("rsqrt."), 2 * layers + 1);
    assert_eq!(
        text.iter().filter(|t| t.contains("exp.")).count(),
        2 * layers,
        "exp appears only in the softmax kernels and in the kernels holding the SiLU gates"
    );
    // Each SiLU gate is the epilogue of its merged gate/up matmul: two contraction phases
    // over the merged `[2 * intermediate, hidden]` weight, `intermediate` columns stored.
    let merged_len = Dim::constant((2 * config.intermediate_size * config.hidden_size) as i64);
    let gated = kernels
        .iter()
        .zip(&text)
        .filter(|(k, t)| {
            k.kind == KernelKind::MatMul
                && t.contains("exp.")
                && t.matches("declare acc").count() == 2
                && k.params
                    .iter()
                    .any(|p| p.role == BufferRole::Input && p.len == merged_len)
        })
        .count();
    assert_eq!(gated, layers);
    // No kernel only moves data around (a materialized transpose or copy).
    let copies = kernels
        .iter()
        .filter(|k| k.name.contains("permute") || k.name.contains("reshape"))
        .count();
    assert_eq!(
        copies,
        0,
        "{:?}",
        kernels.iter().map(|k| &k.name).collect::<Vec<_>>()
    );
    // Weight concatenations run once, at load time.
    assert_eq!(compiled.schedule.load_time.len(), 2 * layers);
}
