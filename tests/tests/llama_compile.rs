//! The tiny Llama through the e-graph optimizer: identical logits, fewer nodes, no
//! transpose left in front of a matmul, and Q/K/V and gate/up merged into one product each.

mod common;

use common::{tiny, traced, weights};
use kiln_compiler::egraph::{optimize, OptimizeOptions};
use kiln_ir::interp::{run, Env};
use kiln_ir::{Graph, Op, Tensor};
use kiln_models::llama::LlamaForCausalLM;

fn permutes_feeding_matmuls(g: &Graph) -> usize {
    g.nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::MatMul { .. }))
        .flat_map(|n| n.inputs.iter())
        .filter(|i| matches!(g.node(**i).op, Op::Permute { .. }))
        .count()
}

#[test]
fn optimized_llama_gives_identical_logits() {
    let model = LlamaForCausalLM::new(&tiny());
    let graph = traced(&model);
    let opt = optimize(&graph, &OptimizeOptions::default()).expect("optimize");
    println!(
        "{} nodes -> {} nodes\n{}",
        graph.nodes().len(),
        opt.graph.nodes().len(),
        opt.stats
    );
    assert!(opt.graph.nodes().len() < graph.nodes().len());
    assert!(permutes_feeding_matmuls(&graph) > 0);
    assert_eq!(permutes_feeding_matmuls(&opt.graph), 0, "{}", opt.graph);
    // Per layer, q/k/v (3 products of the normed input) become 1 and gate/up (2) become 1:
    // 3 fewer matmul nodes per layer, each merged product reading a concat of params.
    let layers = tiny().num_hidden_layers;
    let matmuls = |g: &Graph| {
        g.nodes()
            .iter()
            .filter(|n| matches!(n.op, Op::MatMul { .. }))
            .count()
    };
    assert_eq!(matmuls(&graph), 9 * layers + 1);
    assert_eq!(matmuls(&opt.graph), matmuls(&graph) - 3 * layers);
    assert_eq!(opt.stats.applied("matmul-merge-shared-input"), 5 * layers);
    let concats_of_params = opt
        .graph
        .nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::Concat { axis: 0 }))
        .filter(|n| {
            n.inputs
                .iter()
                .all(|i| matches!(opt.graph.node(*i).op, Op::Param { .. }))
        })
        .count();
    assert_eq!(concats_of_params, 2 * layers);
    for ids in [vec![3i64, 17, 0], vec![5, 60, 42, 1, 1, 9, 30]] {
        let n = ids.len();
        let mut env = Env::new().input("ids", Tensor::from_vec(vec![1, n], ids).unwrap());
        for (name, t) in weights(&model) {
            env.set_param(&name, t);
        }
        let before = run(&graph, &env).unwrap();
        let after = run(&opt.graph, &env).unwrap();
        // Every rule is exact: bit-identical logits.
        assert_eq!(
            before.get("logits").unwrap(),
            after.get("logits").unwrap(),
            "seq {n}"
        );
    }
}

#[test]
fn the_whole_pipeline_runs_the_tiny_llama_exactly() {
    use kiln_compiler::schedule::{run as run_schedule, Feeds};
    let model = LlamaForCausalLM::new(&tiny());
    let graph = traced(&model);
    let compiled = kiln_compiler::compile(&graph, Some(&OptimizeOptions::default())).unwrap();
    let ids = Tensor::from_vec(vec![1, 4], vec![7i64, 0, 33, 12]).unwrap();
    let mut env = Env::new().input("ids", ids.clone());
    let mut feeds = Feeds::new().input("ids", ids);
    for (name, t) in weights(&model) {
        env.set_param(&name, t.clone());
        feeds = feeds.param(&name, t);
    }
    let want = run(&graph, &env).unwrap();
    let (outputs, _) = run_schedule(&compiled.schedule, &feeds).unwrap();
    assert_eq!(&outputs[0].1, want.get("logits").unwrap());
    let report = compiled
        .report(&kiln_ir::Bindings::new().with("seq", 4))
        .unwrap();
    println!("{report}");
    assert_eq!(report.kernels, compiled.schedule.launches.len());
    assert!(report.peak_bytes <= report.arena_bytes && report.bytes_moved > 0);
}
