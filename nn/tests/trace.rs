//! Tracing basics: graphs, names, errors with source locations.

use kiln_ir::DType;
use kiln_nn::layers::{Linear, LinearConfig};
use kiln_nn::{dims, Module, Trace};

#[test]
fn linear_traces_to_matmul_plus_bias() {
    let lin = Linear::new(&LinearConfig::new(8, 3));
    assert_eq!(lin.state_dict_keys(), ["weight", "bias"]);
    let tr = Trace::new();
    let x = tr.input("x", DType::F32, dims!["batch", "seq", 8]);
    let y = lin.forward(&x);
    tr.output("y", &y);
    let g = tr.finish().unwrap();
    assert_eq!(
        g.ty(g.output("y").unwrap()).to_string(),
        "f32[batch, seq, 3]"
    );
}

#[test]
fn errors_carry_the_call_site() {
    let lin = Linear::new(&LinearConfig::new(8, 3));
    let tr = Trace::new();
    let x = tr.input("x", DType::F32, dims!["seq", 5]);
    let y = lin.forward(&x);
    tr.output("y", &y);
    let e = tr.finish().unwrap_err();
    // `forward` is #[track_caller]: the location is the model code that called the layer.
    assert!(e.location.starts_with("nn/tests/trace.rs:"), "{e}");
    assert!(e.to_string().contains("matmul"), "{e}");
}

mod common;

#[test]
fn traced_linear_runs_on_the_interpreter() {
    use kiln_ir::Tensor;
    let lin = Linear::new(&LinearConfig::new(2, 2));
    let tr = Trace::new();
    let x = tr.input("x", DType::F32, dims!["seq", 2]);
    tr.output("y", &lin.forward(&x));
    let g = tr.finish().unwrap();
    let params = vec![
        (
            "weight".to_string(),
            Tensor::from_vec(vec![2, 2], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap(),
        ),
        (
            "bias".to_string(),
            Tensor::from_vec(vec![2], vec![0.5f32, -0.5]).unwrap(),
        ),
    ];
    let x = Tensor::from_vec(vec![1, 2], vec![1.0f32, 1.0]).unwrap();
    let y = common::eval(&g, &params, &[("x", x)], "y");
    let want = Tensor::from_vec(vec![1, 2], vec![3.5f32, 6.5]).unwrap();
    common::assert_close("linear", &y, &want, 0.0, 0.0);
}

#[test]
fn scalar_over_tensor_and_silu_trace_and_run() {
    // `1.0 / &x` (and so sigmoid and silu) builds a `full_like`, which used to read the
    // tensor's shape while the graph was borrowed for writing: a RefCell panic.
    use kiln_ir::Tensor;
    let tr = Trace::new();
    let x = tr.input("x", DType::F32, dims!["n"]);
    tr.output("r", &(1.0 / &x));
    tr.output("s", &kiln_nn::functional::silu(&x));
    let g = tr.finish().unwrap();
    let x = Tensor::from_vec(vec![2], vec![2.0f32, -1.0]).unwrap();
    let r = common::eval(&g, &[], &[("x", x.clone())], "r");
    common::assert_close(
        "1/x",
        &r,
        &Tensor::from_vec(vec![2], vec![0.5f32, -1.0]).unwrap(),
        0.0,
        0.0,
    );
    let s = common::eval(&g, &[], &[("x", x)], "s");
    let silu = |v: f64| (v / (1.0 + (-v).exp())) as f32;
    let want = Tensor::from_vec(vec![2], vec![silu(2.0), silu(-1.0)]).unwrap();
    common::assert_close("silu", &s, &want, 1e-6, 0.0);
}

mod flatten {
    use kiln_nn::layers::{Linear, LinearConfig};
    use kiln_nn::{model, Module, Param};

    #[model(config = usize)]
    pub struct Inner {
        #[param(shape = [*cfg])]
        pub scale: Param,
        #[module(config = LinearConfig::new(*cfg, 2), count = 2, name = "")]
        pub numbered: Vec<Linear>,
    }

    #[model(config = usize)]
    pub struct Outer {
        #[param(shape = [*cfg])]
        pub shift: Param,
        #[module(config = *cfg, name = "")]
        pub plain: Inner,
        #[module(config = LinearConfig::new(*cfg, 1), when = *cfg > 1, name = "")]
        pub maybe: Option<Linear>,
    }

    #[test]
    fn an_empty_module_name_flattens_the_sub_module_into_the_prefix() {
        let m = <Outer as Module>::build(&3, "root.");
        assert_eq!(
            m.state_dict_keys(),
            [
                "root.shift",
                "root.scale",
                "root.0.weight",
                "root.0.bias",
                "root.1.weight",
                "root.1.bias",
                "root.weight",
                "root.bias",
            ]
        );
    }
}

#[test]
fn freezing_and_modes_recurse_through_the_tree() {
    use kiln_nn::layers::{Attention, AttentionConfig};
    use kiln_nn::ParamKind;
    let mut attn = Attention::new(&AttentionConfig::new(16, 4, 2, 4));
    assert!(attn.param_specs().iter().all(|p| p.trainable));
    attn.freeze();
    assert!(attn.param_specs().iter().all(|p| !p.trainable));
    attn.q_proj.unfreeze();
    let trainable: Vec<String> = attn
        .param_specs()
        .into_iter()
        .filter(|p| p.trainable)
        .map(|p| p.name)
        .collect();
    assert_eq!(trainable, ["q_proj.weight"]);
    assert!(!attn.is_training());
    attn.train();
    assert!(attn.is_training() && attn.q_proj.is_training());
    attn.eval();
    assert!(!attn.q_proj.is_training());
    assert!(attn
        .param_specs()
        .iter()
        .all(|p| p.kind == ParamKind::Weight));
}

#[test]
fn loaders_can_substitute_parameter_dtypes() {
    use kiln_ir::QuantType;
    use std::collections::HashMap;
    let lin = Linear::new(&LinearConfig::new(64, 8).no_bias());
    let dtypes = HashMap::from([("weight".to_string(), DType::Quant(QuantType::Q8_0))]);
    let tr = Trace::with_param_dtypes(dtypes);
    let x = tr.input("x", DType::F32, dims!["seq", 64]);
    tr.output("y", &lin.forward(&x));
    let g = tr.finish().unwrap();
    let text = g.to_string();
    assert!(text.contains("param \"weight\" : q8_0[8, 64]"), "{text}");
    assert!(
        text.contains("matmul %0, %1 trans_b : f32[seq, 8]"),
        "{text}"
    );
}
