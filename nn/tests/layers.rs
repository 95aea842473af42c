//! The nn layers against PyTorch: every case of `tests/fixtures/layers.safetensors` (made by
//! `scripts/fixtures/make_nn_layer_fixtures.py`) is built from its config, traced with
//! symbolic dims, run on the reference interpreter and compared with the torch module's
//! output; the layer's `state_dict` keys must equal the torch module's. Then the errors.

mod common;

use kiln_ir::{DType, Dim, Graph, Shape};
use kiln_nn::functional::GeluApprox;
use kiln_nn::layers::*;
use kiln_nn::{dims, Module, Param, Tensor, Trace, TraceError};
use serde_json::Value;
use std::collections::HashMap;

/// The interpreter rounds to f32 after every op, the reference once: a few f32 ulps apart.
const RTOL: f64 = 1e-5;
const ATOL: f64 = 1e-6;

fn usize_of(cfg: &Value, key: &str, default: usize) -> usize {
    cfg.get(key)
        .map_or(default, |v| v.as_u64().expect(key) as usize)
}

fn bool_of(cfg: &Value, key: &str, default: bool) -> bool {
    cfg.get(key).map_or(default, |v| v.as_bool().expect(key))
}

fn f64_of(cfg: &Value, key: &str, default: f64) -> f64 {
    cfg.get(key).map_or(default, |v| v.as_f64().expect(key))
}

/// A torch `int or (int, int)` argument.
fn pair_of(cfg: &Value, key: &str, default: usize) -> [usize; 2] {
    match cfg.get(key) {
        None => [default; 2],
        Some(Value::Array(a)) => [
            a[0].as_u64().unwrap() as usize,
            a[1].as_u64().unwrap() as usize,
        ],
        Some(v) => [v.as_u64().expect(key) as usize; 2],
    }
}

fn activation_of(cfg: &Value) -> Activation {
    let name = cfg["activation"].as_str().unwrap();
    Activation::from_hf_name(name).unwrap_or_else(|| panic!("activation {name}"))
}

/// Traces `forward` of `m` on one input; returns the graph and the state_dict keys.
fn trace<M: Module>(
    m: &M,
    dtype: DType,
    shape: Shape,
    forward: impl Fn(&M, &Tensor) -> Tensor,
) -> Result<(Graph, Vec<String>), TraceError> {
    let tr = Trace::new();
    let x = tr.input("x", dtype, shape);
    let y = forward(m, &x);
    tr.output("y", &y);
    Ok((tr.finish()?, m.state_dict_keys()))
}

/// Builds the layer a case describes and traces it.
fn build_and_trace(case: &Value) -> (Graph, Vec<String>) {
    let cfg = &case["config"];
    let shape = Shape(
        case["input_dims"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| match d {
                Value::String(s) => Dim::symbol(s),
                v => Dim::from(v.as_i64().unwrap()),
            })
            .collect(),
    );
    let dtype = match case["input_dtype"].as_str().unwrap() {
        "f32" => DType::F32,
        "i64" => DType::I64,
        other => panic!("dtype {other}"),
    };
    let r = match case["layer"].as_str().unwrap() {
        "Embedding" => {
            let c = EmbeddingConfig::new(
                usize_of(cfg, "num_embeddings", 0),
                usize_of(cfg, "embedding_dim", 0),
            );
            trace(&Embedding::new(&c), dtype, shape, Embedding::forward)
        }
        "LayerNorm" => {
            let dims: Vec<usize> = cfg["normalized_shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            let c = LayerNormConfig {
                normalized_shape: dims,
                eps: f64_of(cfg, "eps", 1e-5),
                elementwise_affine: bool_of(cfg, "elementwise_affine", true),
                bias: bool_of(cfg, "bias", true),
            };
            trace(&LayerNorm::new(&c), dtype, shape, LayerNorm::forward)
        }
        "RMSNorm" => {
            let c =
                RMSNormConfig::new(usize_of(cfg, "hidden_size", 0)).eps(f64_of(cfg, "eps", 1e-6));
            trace(&RMSNorm::new(&c), dtype, shape, RMSNorm::forward)
        }
        "GroupNorm" => {
            let c = GroupNormConfig {
                num_groups: usize_of(cfg, "num_groups", 0),
                num_channels: usize_of(cfg, "num_channels", 0),
                eps: f64_of(cfg, "eps", 1e-5),
                affine: bool_of(cfg, "affine", true),
            };
            trace(&GroupNorm::new(&c), dtype, shape, GroupNorm::forward)
        }
        "Conv1d" => {
            let c = Conv1dConfig {
                in_channels: usize_of(cfg, "in_channels", 0),
                out_channels: usize_of(cfg, "out_channels", 0),
                kernel_size: usize_of(cfg, "kernel_size", 0),
                stride: usize_of(cfg, "stride", 1),
                padding: usize_of(cfg, "padding", 0),
                dilation: usize_of(cfg, "dilation", 1),
                groups: usize_of(cfg, "groups", 1),
                bias: bool_of(cfg, "bias", true),
            };
            trace(&Conv1d::new(&c), dtype, shape, Conv1d::forward)
        }
        "Conv2d" => {
            let c = Conv2dConfig {
                in_channels: usize_of(cfg, "in_channels", 0),
                out_channels: usize_of(cfg, "out_channels", 0),
                kernel_size: pair_of(cfg, "kernel_size", 0),
                stride: pair_of(cfg, "stride", 1),
                padding: pair_of(cfg, "padding", 0),
                dilation: pair_of(cfg, "dilation", 1),
                groups: usize_of(cfg, "groups", 1),
                bias: bool_of(cfg, "bias", true),
            };
            trace(&Conv2d::new(&c), dtype, shape, Conv2d::forward)
        }
        "ConvTranspose1d" => {
            let c = ConvTranspose1dConfig {
                in_channels: usize_of(cfg, "in_channels", 0),
                out_channels: usize_of(cfg, "out_channels", 0),
                kernel_size: usize_of(cfg, "kernel_size", 0),
                stride: usize_of(cfg, "stride", 1),
                padding: usize_of(cfg, "padding", 0),
                output_padding: usize_of(cfg, "output_padding", 0),
                dilation: usize_of(cfg, "dilation", 1),
                groups: usize_of(cfg, "groups", 1),
                bias: bool_of(cfg, "bias", true),
            };
            trace(
                &ConvTranspose1d::new(&c),
                dtype,
                shape,
                ConvTranspose1d::forward,
            )
        }
        "ReLU" => trace(&ReLU::new(&()), dtype, shape, ReLU::forward),
        "SiLU" => trace(&SiLU::new(&()), dtype, shape, SiLU::forward),
        "Sigmoid" => trace(&Sigmoid::new(&()), dtype, shape, Sigmoid::forward),
        "Tanh" => trace(&Tanh::new(&()), dtype, shape, Tanh::forward),
        "GELU" => {
            let approx = match cfg["approximate"].as_str().unwrap() {
                "none" => GeluApprox::None,
                "tanh" => GeluApprox::Tanh,
                other => panic!("approximate {other}"),
            };
            trace(&GELU::new(&approx), dtype, shape, GELU::forward)
        }
        "Mlp" => {
            let c = MlpConfig {
                in_features: usize_of(cfg, "in_features", 0),
                hidden_features: usize_of(cfg, "hidden_features", 0),
                out_features: usize_of(cfg, "out_features", 0),
                bias: bool_of(cfg, "bias", true),
                activation: activation_of(cfg),
            };
            trace(&Mlp::new(&c), dtype, shape, Mlp::forward)
        }
        "GatedMlp" => {
            let c = GatedMlpConfig {
                hidden_size: usize_of(cfg, "hidden_size", 0),
                intermediate_size: usize_of(cfg, "intermediate_size", 0),
                bias: bool_of(cfg, "bias", false),
                activation: activation_of(cfg),
            };
            trace(&GatedMlp::new(&c), dtype, shape, GatedMlp::forward)
        }
        "Dropout" => {
            let c = DropoutConfig::new(f64_of(cfg, "p", 0.5));
            trace(&Dropout::new(&c), dtype, shape, Dropout::forward)
        }
        other => panic!("no layer {other}"),
    };
    r.unwrap_or_else(|e| panic!("{}: trace: {e}", case["name"]))
}

#[test]
fn layers_match_pytorch() {
    let fx = common::load("layers.safetensors");
    let cases = fx.meta["cases"].as_array().expect("cases");
    let mut seen = 0;
    let mut layers = HashMap::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let (graph, keys) = build_and_trace(case);
        let want_keys: Vec<String> = case["state_dict_keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        assert_eq!(keys, want_keys, "{name}: state_dict keys");
        let params: Vec<_> = fx
            .with_prefix(&format!("{name}."))
            .into_iter()
            .filter(|(k, _)| keys.contains(k))
            .collect();
        assert_eq!(params.len(), keys.len(), "{name}: weights in the fixture");
        let x = fx.get(&format!("{name}.input")).clone();
        let y = common::eval(&graph, &params, &[("x", x)], "y");
        common::assert_close(name, &y, fx.get(&format!("{name}.output")), RTOL, ATOL);
        *layers
            .entry(case["layer"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
        seen += 1;
    }
    assert_eq!(seen, fx.meta["count"].as_u64().unwrap() as usize);
    // Every layer of this file has cases.
    for layer in [
        "Embedding",
        "LayerNorm",
        "RMSNorm",
        "GroupNorm",
        "Conv1d",
        "Conv2d",
        "ConvTranspose1d",
        "ReLU",
        "GELU",
        "SiLU",
        "Sigmoid",
        "Tanh",
        "Mlp",
        "GatedMlp",
        "Dropout",
    ] {
        assert!(layers.contains_key(layer), "no fixture case for {layer}");
    }
}

/// The output type of `forward` on `[dims]`, or the trace error.
fn out_type<M: Module>(
    m: &M,
    shape: Shape,
    forward: impl Fn(&M, &Tensor) -> Tensor,
) -> Result<String, TraceError> {
    let (g, _) = trace(m, DType::F32, shape, forward)?;
    Ok(g.ty(g.output("y").unwrap()).to_string())
}

#[test]
fn conv_output_sizes_stay_symbolic() {
    let c = Conv1d::new(&Conv1dConfig::new(3, 7, 3));
    assert_eq!(
        out_type(&c, dims!["batch", 3, "len"], Conv1d::forward).unwrap(),
        "f32[batch, 7, len - 2]"
    );
    let c = Conv1d::new(&Conv1dConfig::new(3, 7, 5).stride(2).padding(2));
    let t = out_type(&c, dims!["batch", 3, "len"], Conv1d::forward).unwrap();
    assert!(t.starts_with("f32[batch, 7, ") && t.contains("len"), "{t}");
    let c = Conv2d::new(&Conv2dConfig::new(3, 8, 4).stride(4));
    assert_eq!(
        out_type(&c, dims![2, 3, 16, 12], Conv2d::forward).unwrap(),
        "f32[2, 8, 4, 3]"
    );
    let c = ConvTranspose1d::new(&ConvTranspose1dConfig::new(3, 7, 4).stride(2).padding(1));
    assert_eq!(
        out_type(&c, dims!["batch", 3, "len"], ConvTranspose1d::forward).unwrap(),
        "f32[batch, 7, 2*len]"
    );
}

fn message(e: &TraceError) -> String {
    e.error.to_string()
}

#[test]
fn conv_errors_name_the_op_and_the_shapes() {
    let c = Conv2d::new(&Conv2dConfig::new(3, 8, 3));
    // Called directly (not through a fn pointer), so the location is this call.
    let tr = Trace::new();
    let x = tr.input("x", DType::F32, dims![3, 9]);
    tr.output("y", &c.forward(&x));
    let e = tr.finish().unwrap_err();
    let m = message(&e);
    assert!(m.contains("conv2d") && m.contains("f32[3, 9]"), "{m}");
    assert!(e.location.starts_with("nn/tests/layers.rs:"), "{e}");

    let e = out_type(&c, dims!["batch", 5, "h", "w"], Conv2d::forward).unwrap_err();
    let m = message(&e);
    assert!(
        m.contains("conv2d") && m.contains("f32[batch, 5, h, w]") && m.contains("expects 3"),
        "{m}"
    );

    let c = Conv1d::new(&Conv1dConfig::new(3, 8, 5).dilation(2));
    let e = out_type(&c, dims![1, 3, 8], Conv1d::forward).unwrap_err();
    let m = message(&e);
    assert!(
        m.contains("conv1d") && m.contains("smaller than the dilated kernel"),
        "{m}"
    );

    let c = Conv1d::new(&Conv1dConfig::new(3, 8, 3).groups(2));
    let e = out_type(&c, dims![1, 3, 8], Conv1d::forward).unwrap_err();
    assert!(message(&e).contains("groups (2)"), "{e}");

    let c = ConvTranspose1d::new(&ConvTranspose1dConfig::new(3, 3, 3).output_padding(1));
    let e = out_type(&c, dims![1, 3, 8], ConvTranspose1d::forward).unwrap_err();
    assert!(message(&e).contains("output_padding"), "{e}");

    // An unbatched Conv2d input is [C, H, W], as in PyTorch.
    let c = Conv2d::new(&Conv2dConfig::new(3, 8, 3));
    assert_eq!(
        out_type(&c, dims![3, "h", "w"], Conv2d::forward).unwrap(),
        "f32[8, h - 2, w - 2]"
    );
}

#[test]
fn norm_and_embedding_errors() {
    let ln = LayerNorm::new(&LayerNormConfig::over(&[3, 5]));
    let e = out_type(&ln, dims!["seq", 5, 3], LayerNorm::forward).unwrap_err();
    let m = message(&e);
    assert!(
        m.contains("layer_norm") && m.contains("f32[seq, 5, 3]"),
        "{m}"
    );

    let rms = RMSNorm::new(&RMSNormConfig::new(8));
    let e = out_type(&rms, dims!["seq", 7], RMSNorm::forward).unwrap_err();
    assert!(message(&e).contains("rms_norm"), "{e}");

    let gn = GroupNorm::new(&GroupNormConfig::new(2, 6));
    let e = out_type(&gn, dims!["batch", 4, "len"], GroupNorm::forward).unwrap_err();
    assert!(message(&e).contains("group_norm"), "{e}");

    let emb = Embedding::new(&EmbeddingConfig::new(10, 4));
    let e = out_type(&emb, dims!["seq"], Embedding::forward).unwrap_err();
    let m = message(&e);
    assert!(m.contains("embedding") && m.contains("integers"), "{m}");
}

#[test]
fn dropout_is_identity_in_eval_and_an_error_in_training() {
    let mut d = Dropout::new(&DropoutConfig::new(0.1));
    assert!(!d.is_training(), "eval mode after new");
    assert!(d.state_dict_keys().is_empty());
    let tr = Trace::new();
    let x = tr.input("x", DType::F32, dims!["seq", 4]);
    let y = d.forward(&x);
    assert_eq!(y.node(), x.node(), "identity in eval mode");
    tr.output("y", &y);
    tr.finish().unwrap();

    d.train();
    let tr = Trace::new();
    let x = tr.input("x", DType::F32, dims!["seq", 4]);
    tr.output("y", &d.forward(&x));
    let e = tr.finish().unwrap_err();
    let m = message(&e);
    assert!(
        m.contains("dropout") && m.contains("training") && m.contains("random"),
        "{m}"
    );
    assert!(e.location.starts_with("nn/tests/layers.rs:"), "{e}");

    // p = 0 needs no randomness; p = 1 zeros everything (PyTorch multiplies by 0).
    let mut d0 = Dropout::new(&DropoutConfig::new(0.0));
    d0.train();
    assert_eq!(
        out_type(&d0, dims!["seq", 4], Dropout::forward).unwrap(),
        "f32[seq, 4]"
    );
    let mut d1 = Dropout::new(&DropoutConfig::new(1.0));
    d1.train();
    let (g, _) = trace(&d1, DType::F32, dims![2], Dropout::forward).unwrap();
    let x = kiln_ir::Tensor::from_vec(vec![2], vec![1.5f32, -2.0]).unwrap();
    let y = common::eval(&g, &[], &[("x", x)], "y");
    assert_eq!(y.to_f64_vec().unwrap(), [0.0, 0.0]);

    // `train()` reaches a dropout inside a model.
    let mut m = WithDropout::new(&());
    m.train();
    assert!(m.drop.is_training());
    let tr = Trace::new();
    let x = tr.input("x", DType::F32, dims![2]);
    tr.output("y", &m.drop.forward(&x));
    assert!(message(&tr.finish().unwrap_err()).contains("random source"));
    m.eval();
    assert!(!m.drop.is_training());

    let bad = Dropout::new(&DropoutConfig::new(1.5));
    let e = out_type(&bad, dims![2], Dropout::forward).unwrap_err();
    assert!(message(&e).contains("between 0 and 1"), "{e}");
}

#[test]
fn half_inputs_are_normalized_in_f32() {
    let tr = Trace::new();
    let x = tr.input("x", DType::F16, dims!["seq", 8]);
    let ln = LayerNorm::new(&LayerNormConfig::new(8));
    let rms = RMSNorm::new(&RMSNormConfig::new(8));
    assert_eq!(ln.forward(&x).dtype(), DType::F16);
    // The weight is declared f32: `weight * x.to(f16)` promotes to f32, as in PyTorch.
    assert_eq!(rms.forward(&x).dtype(), DType::F32);
    tr.finish().unwrap();

    // With an f16 weight (as loaded from an f16 checkpoint) the output stays f16.
    let tr = Trace::with_param_dtypes(HashMap::from([("weight".to_string(), DType::F16)]));
    let x = tr.input("x", DType::F16, dims!["seq", 8]);
    let y = rms.forward(&x);
    assert_eq!(y.dtype(), DType::F16);
    tr.output("y", &y);
    let g = tr.finish().unwrap();
    let casts_to_f32 = g
        .nodes()
        .iter()
        .filter(|n| matches!(n.op, kiln_ir::Op::Cast { to: DType::F32 }))
        .count();
    assert_eq!(casts_to_f32, 1, "the statistics are computed in f32");
}

#[test]
fn configs_and_names() {
    assert_eq!(
        Activation::from_hf_name("gelu_pytorch_tanh"),
        Some(Activation::Gelu(GeluApprox::Tanh))
    );
    assert_eq!(Activation::from_hf_name("swish"), Some(Activation::Silu));
    assert_eq!(Activation::from_hf_name("quick_gelu"), None);

    let m = GatedMlp::new(&GatedMlpConfig::swiglu(8, 16));
    assert_eq!(
        m.state_dict_keys(),
        ["gate_proj.weight", "up_proj.weight", "down_proj.weight"]
    );
    let m = Mlp::new(&MlpConfig::new(8, 16).out_features(4));
    assert_eq!(
        m.state_dict_keys(),
        ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    );
    let specs = Conv2d::new(&Conv2dConfig::new(6, 4, 3).groups(2)).param_specs();
    assert_eq!(specs[0].shape, dims![4, 3, 3, 3]);
    let specs = ConvTranspose1d::new(&ConvTranspose1dConfig::new(6, 4, 3).groups(2)).param_specs();
    assert_eq!(specs[0].shape, dims![6, 2, 3]);
    let ln = LayerNorm::new(&LayerNormConfig::over(&[3, 5]).no_bias());
    assert_eq!(ln.state_dict_keys(), ["weight"]);
    assert_eq!(ln.param_specs()[0].shape, dims![3, 5]);
    assert!(LayerNorm::new(&LayerNormConfig::new(4).no_affine())
        .state_dict_keys()
        .is_empty());
}

#[kiln_nn::model(config = ())]
struct WithDropout {
    #[module(config = DropoutConfig::new(0.2))]
    drop: Dropout,
}

/// `#[model(config = ())]` and a `shape = <expression>` (both used by the layers above).
#[kiln_nn::model(config = ())]
struct NoConfig {
    #[param(shape = vec![2usize, 3])]
    w: Param,
}

#[test]
fn unit_config_and_shape_expressions() {
    let m = NoConfig::new(&());
    assert_eq!(m.w.shape(), &dims![2, 3]);
    assert_eq!(m.state_dict_keys(), ["w"]);
}
