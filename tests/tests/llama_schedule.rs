//! A Llama-style model traced from the nn library, scheduled into loop-IR kernels and run on
//! the loop-IR evaluator: same logits as the reference interpreter, and the fusions the
//! scheduler promises (one kernel per softmax, per RMSNorm, per gated-MLP activation).

mod common;

use common::{tiny, traced, weights};
use kiln_compiler::loop_ir::KernelKind;
use kiln_compiler::schedule::{run as run_schedule, schedule, Feeds};
use kiln_ir::interp::{run, Env};
use kiln_ir::{Op, Tensor};
use kiln_models::llama::LlamaForCausalLM;

#[test]
fn scheduled_llama_matches_the_interpreter_bit_for_bit() {
    let model = LlamaForCausalLM::new(&tiny());
    let graph = traced(&model);
    let sched = schedule(&graph).expect("schedule");
    let ids = Tensor::from_vec(vec![1, 5], vec![3i64, 17, 0, 60, 42]).unwrap();
    let mut env = Env::new().input("ids", ids.clone());
    let mut feeds = Feeds::new().input("ids", ids);
    for (name, t) in weights(&model) {
        env.set_param(&name, t.clone());
        feeds = feeds.param(&name, t);
    }
    let want = run(&graph, &env).expect("interpreter");
    let (outputs, _) = run_schedule(&sched, &feeds).expect("scheduled run");
    let got = outputs
        .iter()
        .find(|(n, _)| n == "logits")
        .map(|(_, t)| t)
        .expect("logits");
    let want = want.get("logits").unwrap();
    assert_eq!(got.shape(), want.shape());
    assert_eq!(
        got.as_slice::<f32>().unwrap(),
        want.as_slice::<f32>().unwrap(),
        "scheduled logits differ from the interpreter's"
    );
}

#[test]
fn gated_mlp_activation_is_fused_into_its_matmuls() {
    let model = LlamaForCausalLM::new(&tiny());
    let graph = traced(&model);
    let sched = schedule(&graph).expect("schedule");
    let count = |kind: KernelKind| sched.kernels.iter().filter(|k| k.kind == kind).count();
    let layers = tiny().num_hidden_layers;
    println!(
        "{layers}-layer Llama: {} graph nodes -> {} kernels ({} matmul, {} reduction, {} elementwise, {} scatter), {} load-time",
        graph.nodes().len(),
        sched.kernels.len(),
        count(KernelKind::MatMul),
        count(KernelKind::Reduction),
        count(KernelKind::Elementwise),
        count(KernelKind::Scatter),
        sched.load_time.len(),
    );
    // silu(x @ gate) * (x @ up): both products and the activation in one kernel per layer.
    let gated = sched
        .kernels
        .iter()
        .filter(|k| {
            let text = k.to_string();
            k.kind == KernelKind::MatMul
                && text.contains("exp.")
                && text.matches("declare acc").count() == 2
        })
        .count();
    assert_eq!(gated, layers);
    // Every matmul node becomes one matmul kernel at most (the gate/up pair shares one).
    let matmul_nodes = graph
        .nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::MatMul { .. }))
        .count();
    assert_eq!(count(KernelKind::MatMul), matmul_nodes - layers);
}

#[test]
#[ignore = "prints the kernels; run with --ignored --nocapture"]
fn print_kernels() {
    let model = LlamaForCausalLM::new(&tiny());
    let sched = schedule(&traced(&model)).expect("schedule");
    for k in &sched.kernels {
        println!("{k}");
    }
}
