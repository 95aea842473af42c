//! A Llama-style model traced from the nn library, scheduled into loop-IR kernels and run on
//! the loop-IR evaluator: same logits as the reference interpreter, and the fusions the
//! scheduler promises (one kernel per softmax, per RMSNorm, per gated-MLP activation).

mod common;

use common::{tiny, traced, weights};
use kiln_compiler::egraph::{optimize, OptimizeOptions};
use kiln_compiler::loop_ir::{BufferRole, Kernel, KernelKind};
use kiln_compiler::schedule::{run as run_schedule, schedule, Feeds, Schedule};
use kiln_ir::interp::{run, Env};
use kiln_ir::{Dim, Graph, Op, Tensor};
use kiln_models::llama::LlamaForCausalLM;

/// Runs `graph` on the interpreter and `sched` on the loop-IR evaluator; the logits must be
/// bit-identical.
fn assert_logits_bit_identical(model: &LlamaForCausalLM, graph: &Graph, sched: &Schedule) {
    let ids = Tensor::from_vec(vec![1, 5], vec![3i64, 17, 0, 60, 42]).unwrap();
    let mut env = Env::new().input("ids", ids.clone());
    let mut feeds = Feeds::new().input("ids", ids);
    for (name, t) in weights(model) {
        env.set_param(&name, t.clone());
        feeds = feeds.param(&name, t);
    }
    let want = run(graph, &env).expect("interpreter");
    let (outputs, _) = run_schedule(sched, &feeds).expect("scheduled run");
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
fn scheduled_llama_matches_the_interpreter_bit_for_bit() {
    let model = LlamaForCausalLM::new(&tiny());
    let graph = traced(&model);
    let sched = schedule(&graph).expect("schedule");
    assert_logits_bit_identical(&model, &graph, &sched);
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

/// The optimized graph (Q/K/V and gate/up merged into one product each, over a concat of
/// weights) schedules and runs bit-exactly: the weight concats run once at load time, every
/// matmul node is one matmul kernel, and each layer launches 2 kernels fewer than without the
/// merge (q/k/v were 3 kernels, now 1; gate/up already shared one kernel).
#[test]
fn merged_projections_schedule_and_run_exactly() {
    let model = LlamaForCausalLM::new(&tiny());
    let layers = tiny().num_hidden_layers;
    let traced = traced(&model);
    let merged = optimize(&traced, &OptimizeOptions::default())
        .expect("optimize")
        .graph;
    let mut no_merge = OptimizeOptions::default();
    no_merge.stages.retain(|s| s.name != "merge");
    let unmerged = optimize(&traced, &no_merge).expect("optimize").graph;
    let sched = schedule(&merged).expect("schedule");
    let before = schedule(&unmerged).expect("schedule");
    kernel_counts("merged", &merged, &sched);
    kernel_counts("unmerged", &unmerged, &before);
    assert_logits_bit_identical(&model, &traced, &sched);
    assert_logits_bit_identical(&model, &merged, &sched);
    assert_eq!(
        sched.load_time.len(),
        2 * layers,
        "one weight concat per merge"
    );
    assert_eq!(before.load_time.len(), 0);
    assert_eq!(sched.launches.len(), before.launches.len() - 2 * layers);
    let matmul_nodes = merged
        .nodes()
        .iter()
        .filter(|n| matches!(n.op, Op::MatMul { .. }))
        .count();
    let matmul_kernels = sched
        .kernels
        .iter()
        .filter(|k| k.kind == KernelKind::MatMul)
        .count();
    assert_eq!(matmul_kernels, matmul_nodes);
    assert_eq!(matmul_nodes, 6 * layers + 1);
    // The gated-MLP activation (SiLU's exp) is the epilogue of the merged gate/up matmul
    // kernel: it reads the merged `[2 * intermediate, hidden]` weight, accumulates two
    // contraction phases (columns `j` and `j + intermediate`) and stores `intermediate` columns.
    let cfg = tiny();
    let merged_len = Dim::constant((2 * cfg.intermediate_size * cfg.hidden_size) as i64);
    let silu_in_matmul = sched
        .kernels
        .iter()
        .filter(|k| {
            let text = k.to_string();
            k.kind == KernelKind::MatMul
                && text.contains("exp.")
                && text.matches("declare acc").count() == 2
                && k.params
                    .iter()
                    .any(|p| p.role == BufferRole::Input && p.len == merged_len)
        })
        .count();
    let exp_kernels = sched
        .kernels
        .iter()
        .filter(|k| k.kind == KernelKind::MatMul && k.to_string().contains("exp."))
        .count();
    assert_eq!(silu_in_matmul, layers);
    assert_eq!(exp_kernels, layers);
}

#[test]
#[ignore = "prints the kernels; run with --ignored --nocapture"]
fn print_kernels() {
    let model = LlamaForCausalLM::new(&tiny());
    let graph = traced(&model);
    let graph = if std::env::var_os("KILN_OPTIMIZE").is_some() {
        optimize(&graph, &OptimizeOptions::default())
            .expect("optimize")
            .graph
    } else {
        graph
    };
    let sched = schedule(&graph).expect("schedule");
    for k in &sched.kernels {
        println!("{k}");
    }
}

/// Reduction kernels with a max phase and a sum phase: softmax.
fn is_softmax(k: &Kernel) -> bool {
    let text = k.to_string();
    k.kind == KernelKind::Reduction
        && text.contains("= max.")
        && text.contains("exp.")
        && text.matches("declare acc").count() == 2
}

/// Reduction kernels with one sum phase and an `rsqrt` epilogue: RMSNorm.
fn is_rms_norm(k: &Kernel) -> bool {
    let text = k.to_string();
    k.kind == KernelKind::Reduction
        && text.contains("rsqrt.")
        && text.matches("declare acc").count() == 1
}

fn kernel_counts(label: &str, graph: &Graph, sched: &Schedule) {
    let count = |kind: KernelKind| sched.kernels.iter().filter(|k| k.kind == kind).count();
    let names: Vec<String> = sched
        .kernels
        .iter()
        .map(|k| {
            k.name
                .split_once('_')
                .map_or(k.name.clone(), |(_, n)| n.to_string())
        })
        .collect();
    println!(
        "{label}: {} nodes -> {} kernels ({} matmul, {} reduction, {} elementwise, {} scatter; \
         {} softmax, {} rmsnorm): {}",
        graph.nodes().len(),
        sched.kernels.len(),
        count(KernelKind::MatMul),
        count(KernelKind::Reduction),
        count(KernelKind::Elementwise),
        count(KernelKind::Scatter),
        sched.kernels.iter().filter(|k| is_softmax(k)).count(),
        sched.kernels.iter().filter(|k| is_rms_norm(k)).count(),
        names.join(" "),
    );
}

/// Each attention softmax (causal mask, max, exp, sum, normalize; the scores matmul stays a
/// kernel of its own) and each RMSNorm (sum of squares, scale) is one row kernel, RoPE's
/// rotation is recomputed in the scores matmul's operand prologue, on the traced graph and
/// on the e-graph-optimized one, and the logits stay bit-identical.
#[test]
fn softmax_and_rmsnorm_are_single_kernels() {
    let model = LlamaForCausalLM::new(&tiny());
    let layers = tiny().num_hidden_layers;
    let traced = traced(&model);
    let optimized = optimize(&traced, &OptimizeOptions::default())
        .expect("optimize")
        .graph;
    for (label, graph) in [("traced", &traced), ("optimized", &optimized)] {
        let sched = schedule(graph).expect("schedule");
        kernel_counts(label, graph, &sched);
        assert_logits_bit_identical(&model, graph, &sched);
        let softmax = sched.kernels.iter().filter(|k| is_softmax(k)).count();
        assert_eq!(softmax, layers, "{label}: one softmax kernel per layer");
        // Every exp over the key axis lives in a softmax kernel: none left standing alone.
        let stray_exp = sched
            .kernels
            .iter()
            .filter(|k| k.to_string().contains("exp.") && k.kind != KernelKind::MatMul)
            .filter(|k| !is_softmax(k))
            .count();
        assert_eq!(stray_exp, 0, "{label}: exp outside a softmax kernel");
        let norms = sched.kernels.iter().filter(|k| is_rms_norm(k)).count();
        assert_eq!(norms, 2 * layers + 1, "{label}: one kernel per RMSNorm");
        let rsqrt = sched
            .kernels
            .iter()
            .filter(|k| k.to_string().contains("rsqrt."))
            .count();
        assert_eq!(
            rsqrt,
            2 * layers + 1,
            "{label}: rsqrt only in RMSNorm kernels"
        );
        // The reduction kernels are exactly the softmaxes and the norms.
        let reductions = sched
            .kernels
            .iter()
            .filter(|k| k.kind == KernelKind::Reduction)
            .count();
        assert_eq!(reductions, softmax + norms, "{label}");
        // RoPE's rotate-half (`neg` of the upper half, `mul` by cos/sin, `add`) is the scores
        // matmul's operand prologue: in exactly one matmul per layer (SiLU's neg comes with an
        // exp), never in a kernel of its own.
        let rope_in_scores = sched
            .kernels
            .iter()
            .filter(|k| k.kind == KernelKind::MatMul)
            .map(|k| k.to_string())
            .filter(|t| t.contains("neg.") && !t.contains("exp."))
            .count();
        assert_eq!(
            rope_in_scores, layers,
            "{label}: RoPE fused into the scores matmul"
        );
        let rope_alone = sched
            .kernels
            .iter()
            .filter(|k| k.kind == KernelKind::Elementwise && k.to_string().contains("neg."))
            .count();
        assert_eq!(rope_alone, 0, "{label}: RoPE standing alone");
    }
}
