//! A Llama-style model traced from the nn library, scheduled into loop-IR kernels and run on
//! the loop-IR evaluator: same logits as the reference interpreter, and the fusions the
//! scheduler promises (one kernel per softmax, per RMSNorm, per gated-MLP activation).

use kiln_compiler::loop_ir::KernelKind;
use kiln_compiler::schedule::{run as run_schedule, schedule, Feeds};
use kiln_ir::interp::{run, Env};
use kiln_ir::{DType, Dim, Graph, Op, Tensor};
use kiln_models::llama::{LlamaConfig, LlamaForCausalLM};
use kiln_nn::layers::RopeScaling;
use kiln_nn::{dims, Module, Trace};

fn tiny() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 61,
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 8,
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        rope_scaling: RopeScaling::None,
        tie_word_embeddings: true,
        attention_bias: false,
        mlp_bias: false,
        max_position_embeddings: 16,
        kv_cache_batch: Dim::constant(1),
    }
}

fn traced(model: &LlamaForCausalLM) -> Graph {
    let trace = Trace::new();
    let ids = trace.input("ids", DType::I64, dims![1, "seq"]);
    trace.output("logits", &model.forward(&ids));
    trace.finish().expect("trace")
}

/// Deterministic small weights for every parameter.
fn weights(model: &LlamaForCausalLM) -> Vec<(String, Tensor)> {
    model
        .param_specs()
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let shape: Vec<usize> = spec
                .shape
                .as_consts()
                .unwrap()
                .iter()
                .map(|&d| d as usize)
                .collect();
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n)
                .map(|j| {
                    let h = (i as u64 * 7919 + j as u64 * 104729) % 1009;
                    (h as f32 / 1009.0 - 0.5) * 0.4 + if spec.name.ends_with("norm.weight") { 1.0 } else { 0.0 }
                })
                .collect();
            (spec.name.clone(), Tensor::from_vec(shape, values).unwrap())
        })
        .collect()
}

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
fn softmax_rmsnorm_and_mlp_activation_are_fused() {
    let model = LlamaForCausalLM::new(&tiny());
    let graph = traced(&model);
    let sched = schedule(&graph).expect("schedule");
    let count = |kind: KernelKind| sched.kernels.iter().filter(|k| k.kind == kind).count();
    let layers = tiny().num_hidden_layers;
    // No kernel computes an exp on its own: every exp (softmax, sigmoid in SiLU) is inside a
    // reduction or matmul kernel.
    let exp_alone = sched
        .kernels
        .iter()
        .filter(|k| k.kind == KernelKind::Elementwise && k.to_string().contains("exp."))
        .count();
    let rsqrt_alone = sched
        .kernels
        .iter()
        .filter(|k| k.kind == KernelKind::Elementwise && k.to_string().contains("rsqrt."))
        .count();
    let n_kernels = sched.kernels.len();
    let n_matmul_nodes = graph
        .nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::MatMul { .. }))
        .count();
    println!(
        "{layers}-layer Llama: {} graph nodes -> {n_kernels} kernels ({} matmul, {} reduction, {} elementwise, {} scatter), {} load-time; {n_matmul_nodes} matmul nodes",
        graph.nodes().len(),
        count(KernelKind::MatMul),
        count(KernelKind::Reduction),
        count(KernelKind::Elementwise),
        count(KernelKind::Scatter),
        sched.load_time.len(),
    );
    assert_eq!(exp_alone, 0, "an exp was left in an elementwise kernel of its own");
    assert_eq!(rsqrt_alone, 0, "an rsqrt was left in an elementwise kernel of its own");
    // The kernel count stays bounded by the matmuls plus a handful per layer.
    assert!(n_kernels <= n_matmul_nodes + 4 * layers + 4, "{n_kernels} kernels");
}
