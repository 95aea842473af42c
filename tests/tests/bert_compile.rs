//! A BERT-style encoder built from the nn library (token + position embeddings, post-norm
//! layers of self-attention with a padding mask and a GELU MLP) through the compiler: the
//! optimized graph and the scheduled kernels give the interpreter's results, bit for bit.

use kiln_compiler::egraph::{optimize, OptimizeOptions};
use kiln_compiler::schedule::{run as run_schedule, schedule, Feeds};
use kiln_ir::interp::{run, Env};
use kiln_ir::{DType, Graph, Tensor};
use kiln_nn::layers::{
    Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Mlp, MlpConfig, MultiheadAttention,
    MultiheadAttentionConfig,
};
use kiln_nn::{dims, model, Module, Tensor as T, Trace};

#[derive(Clone)]
struct Cfg {
    vocab: usize,
    max_pos: usize,
    dim: usize,
    heads: usize,
    hidden: usize,
    layers: usize,
}

#[model(config = Cfg)]
struct EncoderLayer {
    #[module(config = MultiheadAttentionConfig::new(cfg.dim, cfg.heads))]
    attention: MultiheadAttention,
    #[module(config = LayerNormConfig::new(cfg.dim))]
    attention_norm: LayerNorm,
    #[module(config = MlpConfig::new(cfg.dim, cfg.hidden))]
    mlp: Mlp,
    #[module(config = LayerNormConfig::new(cfg.dim))]
    output_norm: LayerNorm,
}

impl EncoderLayer {
    fn forward(&self, x: &T, padding: &T) -> T {
        let a = self.attention.forward(x, x, x, Some(padding), None, false);
        let x = self.attention_norm.forward(&(x + a));
        let m = self.mlp.forward(&x);
        self.output_norm.forward(&(x + m))
    }
}

#[model(config = Cfg)]
struct Encoder {
    #[module(config = EmbeddingConfig::new(cfg.vocab, cfg.dim))]
    word_embeddings: Embedding,
    #[module(config = EmbeddingConfig::new(cfg.max_pos, cfg.dim))]
    position_embeddings: Embedding,
    #[module(config = LayerNormConfig::new(cfg.dim))]
    embeddings_norm: LayerNorm,
    #[module(config = cfg.clone(), count = cfg.layers)]
    layer: Vec<EncoderLayer>,
}

impl Encoder {
    /// `ids`: `[batch, seq]`; `padding`: bool `[batch, seq]`, true = ignore this key.
    fn forward(&self, ids: &T, padding: &T) -> T {
        let positions = T::arange(ids.size(1), DType::I64).unsqueeze(0);
        let x = self.word_embeddings.forward(ids) + self.position_embeddings.forward(&positions);
        let mut x = self.embeddings_norm.forward(&x);
        for layer in &self.layer {
            x = layer.forward(&x, padding);
        }
        x
    }
}

fn cfg() -> Cfg {
    Cfg {
        vocab: 29,
        max_pos: 16,
        dim: 12,
        heads: 3,
        hidden: 20,
        layers: 2,
    }
}

fn traced(model: &Encoder) -> Graph {
    let trace = Trace::new();
    let ids = trace.input("ids", DType::I64, dims!["batch", "seq"]);
    let padding = trace.input("padding", DType::Bool, dims!["batch", "seq"]);
    trace.output("hidden", &model.forward(&ids, &padding));
    trace.finish().expect("trace")
}

fn tensors(model: &Encoder, batch: usize, seq: usize) -> Vec<(char, String, Tensor)> {
    let mut out = Vec::new();
    for (i, spec) in model.param_specs().iter().enumerate() {
        let shape: Vec<usize> = spec
            .shape
            .as_consts()
            .unwrap()
            .iter()
            .map(|&d| d as usize)
            .collect();
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|j| ((i * 131 + j * 71) % 97) as f32 / 97.0 - 0.5)
            .collect();
        out.push(('p', spec.name.clone(), Tensor::from_vec(shape, v).unwrap()));
    }
    let ids: Vec<i64> = (0..batch * seq).map(|j| (j * 7 % 29) as i64).collect();
    out.push((
        'i',
        "ids".into(),
        Tensor::from_vec(vec![batch, seq], ids).unwrap(),
    ));
    // The last position of the second sequence is padding.
    let pad: Vec<bool> = (0..batch * seq)
        .map(|j| j == batch * seq - 1 && batch > 1)
        .collect();
    out.push((
        'i',
        "padding".into(),
        Tensor::from_vec(vec![batch, seq], pad).unwrap(),
    ));
    out
}

fn interpret(g: &Graph, ts: &[(char, String, Tensor)]) -> Tensor {
    let mut env = Env::new();
    for (k, n, t) in ts {
        if *k == 'p' {
            env.set_param(n, t.clone());
        } else {
            env.set_input(n, t.clone());
        }
    }
    run(g, &env)
        .expect("interpreter")
        .get("hidden")
        .unwrap()
        .clone()
}

#[test]
fn bert_style_encoder_survives_optimization_and_scheduling_exactly() {
    let model = Encoder::new(&cfg());
    let graph = traced(&model);
    let optimized = optimize(&graph, &OptimizeOptions::default())
        .expect("optimize")
        .graph;
    assert!(optimized.nodes().len() < graph.nodes().len());
    let sched = schedule(&optimized).expect("schedule");
    for (batch, seq) in [(1, 3), (2, 7)] {
        let ts = tensors(&model, batch, seq);
        let want = interpret(&graph, &ts);
        assert!(want.to_f64_vec().unwrap().iter().all(|v| v.is_finite()));
        assert_eq!(
            interpret(&optimized, &ts),
            want,
            "optimized graph, batch {batch} seq {seq}"
        );
        let mut feeds = Feeds::new();
        for (k, n, t) in &ts {
            feeds = if *k == 'p' {
                feeds.param(n, t.clone())
            } else {
                feeds.input(n, t.clone())
            };
        }
        let (outputs, _) = run_schedule(&sched, &feeds).expect("scheduled run");
        assert_eq!(
            outputs[0].1, want,
            "scheduled kernels, batch {batch} seq {seq}"
        );
    }
    println!(
        "BERT-style encoder: {} -> {} nodes, {} kernels",
        graph.nodes().len(),
        optimized.nodes().len(),
        sched.kernels.len()
    );
}
