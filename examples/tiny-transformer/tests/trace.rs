//! The example model's names, its traced IR (snapshot) and a run on the interpreter.

use kiln::ir::interp::{run, Env};
use kiln::ir::Tensor;
use kiln::nn::Module;
use tiny_transformer::{small_config, TinyTransformer};

#[test]
fn parameter_names_follow_the_field_tree() {
    let model = TinyTransformer::new(&small_config());
    let keys = model.state_dict_keys();
    assert_eq!(keys.len(), 18);
    assert_eq!(keys[0], "embed");
    assert_eq!(keys[1], "blocks.0.attn_norm.weight");
    assert_eq!(keys[6], "blocks.0.fc1.bias");
    assert_eq!(keys[17], "norm.weight");
}

#[test]
fn printed_ir_snapshot() {
    let graph = TinyTransformer::new(&small_config()).trace().unwrap();
    insta::assert_snapshot!(graph.to_string());
}

#[test]
fn runs_for_any_sequence_length_and_is_causal() {
    let model = TinyTransformer::new(&small_config());
    let graph = model.trace().unwrap();
    let mut env = Env::new();
    for (i, spec) in model.param_specs().iter().enumerate() {
        let shape: Vec<usize> = spec
            .shape
            .as_consts()
            .unwrap()
            .iter()
            .map(|&d| d as usize)
            .collect();
        let n: usize = shape.iter().product();
        let values = (0..n)
            .map(|j| (((i * 31 + j * 17) % 23) as f32 - 11.0) / 40.0)
            .collect();
        env.set_param(&spec.name, Tensor::from_vec(shape, values).unwrap());
    }
    let ids = [1i64, 7, 3, 36, 0];
    let mut outs = Vec::new();
    for len in [2usize, 5] {
        env.set_input(
            "ids",
            Tensor::from_vec(vec![1, len], ids[..len].to_vec()).unwrap(),
        );
        let out = run(&graph, &env).unwrap();
        let logits = out.get("logits").unwrap();
        assert_eq!(logits.shape(), &[1, len, 37]);
        outs.push(logits.as_slice::<f32>().unwrap().to_vec());
    }
    // Positions 0 and 1 see the same tokens in both runs.
    assert_eq!(outs[0], outs[1][..2 * 37]);
    assert!(outs[1].iter().all(|v| v.is_finite()));
}
