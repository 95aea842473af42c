//! RoPE, scaled dot-product attention, MultiheadAttention and grouped-query Attention against
//! PyTorch / Hugging Face references (`scripts/fixtures/make_nn_attention_fixtures.py`), run
//! on the reference interpreter, plus the KV-cache path against the cache-free one.
//!
//! Tolerance: `rtol 1e-5`, `atol 1e-6` everywhere. Kiln computes in f32 (each op rounded to
//! f32, sums and matmuls accumulated in f64), the references in f64 from the same f32 inputs.

mod common;

use common::{assert_close, Fixture};
use kiln_ir::interp::{run, Env, Outputs};
use kiln_ir::{DType, Dim, Shape, Tensor as Value};
use kiln_nn::functional::scaled_dot_product_attention;
use kiln_nn::layers::{
    Attention, AttentionConfig, KvCache, KvCacheConfig, MultiheadAttention,
    MultiheadAttentionConfig, RopeConvention, RopeScaling, RotaryConfig, RotaryEmbedding,
};
use kiln_nn::{dims, Module, Tensor, Trace};
use serde_json::Value as Json;
use std::sync::OnceLock;

const RTOL: f64 = 1e-5;
const ATOL: f64 = 1e-6;

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| common::load("attention.safetensors"))
}

fn cases(kind: &str) -> Vec<Json> {
    let all = fixture().meta.as_array().expect("cases is a list").clone();
    let out: Vec<Json> = all.into_iter().filter(|c| c["kind"] == kind).collect();
    assert!(!out.is_empty(), "no `{kind}` cases in the fixture");
    out
}

fn name(case: &Json) -> String {
    case["name"].as_str().unwrap().to_string()
}

fn usize_of(case: &Json, key: &str) -> usize {
    case[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {case}")) as usize
}

fn get(case: &Json, what: &str) -> Value {
    fixture().get(&format!("{}.{what}", name(case))).clone()
}

fn has(case: &Json, what: &str) -> bool {
    fixture()
        .tensors
        .contains_key(&format!("{}.{what}", name(case)))
}

fn params(case: &Json) -> Vec<(String, Value)> {
    fixture().with_prefix(&format!("{}.p.", name(case)))
}

fn keys(case: &Json) -> Vec<String> {
    case["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

/// A shape of constants, except the axes given as symbols.
fn shape_of(t: &Value, symbols: &[(usize, &str)]) -> Shape {
    let mut dims: Vec<Dim> = t.shape().iter().map(|&d| Dim::from(d)).collect();
    for &(axis, sym) in symbols {
        dims[axis] = Dim::symbol(sym);
    }
    Shape(dims)
}

fn env(params: &[(String, Value)], inputs: Vec<(&str, Value)>, bind: &[(&str, i64)]) -> Env {
    let mut env = Env::new();
    for (k, v) in params {
        env.set_param(k, v.clone());
    }
    for (k, v) in inputs {
        env.set_input(k, v);
    }
    for (s, v) in bind {
        env.set_binding(s, *v);
    }
    env
}

fn run_graph(trace: Trace, env: &Env) -> Outputs {
    let graph = trace.finish().unwrap_or_else(|e| panic!("trace: {e}"));
    run(&graph, env).unwrap_or_else(|e| panic!("interpreter: {e}"))
}

// ---------------------------------------------------------------------------------------------
// RoPE

fn rotary_config(case: &Json) -> RotaryConfig {
    let s = &case["scaling"];
    let scaling = match s["type"].as_str().unwrap() {
        "none" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: s["factor"].as_f64().unwrap(),
        },
        "llama3" => RopeScaling::Llama3 {
            factor: s["factor"].as_f64().unwrap(),
            low_freq_factor: s["low_freq_factor"].as_f64().unwrap(),
            high_freq_factor: s["high_freq_factor"].as_f64().unwrap(),
            original_max_position_embeddings: usize_of(s, "original_max_position_embeddings"),
        },
        other => panic!("scaling {other}"),
    };
    let convention = match case["convention"].as_str().unwrap() {
        "half" => RopeConvention::HalfSplit,
        _ => RopeConvention::Interleaved,
    };
    RotaryConfig::new(usize_of(case, "head_dim"), case["theta"].as_f64().unwrap())
        .partial(usize_of(case, "rotary_dim"))
        .with_convention(convention)
        .with_scaling(scaling)
}

#[test]
fn rope_inverse_frequencies_are_hugging_faces_bit_for_bit() {
    for case in cases("rope") {
        let got = rotary_config(&case).inv_freq();
        let want = get(&case, "inv_freq");
        assert_eq!(got, want.as_slice::<f32>().unwrap(), "{}", name(&case));
    }
}

#[test]
fn rope_matches_hugging_face_and_the_gptj_formula() {
    for case in cases("rope") {
        let n = name(&case);
        let rot = RotaryEmbedding::new(&rotary_config(&case));
        assert!(
            rot.state_dict_keys().is_empty(),
            "{n}: inv_freq is no parameter"
        );
        let x = get(&case, "x");
        let tr = Trace::new();
        let xt = tr.input("x", DType::F32, shape_of(&x, &[(0, "b"), (2, "seq")]));
        let mut inputs = vec![("x", x)];
        let offset = case["offset"].as_i64().unwrap();
        let y = match case["positions"].as_str() {
            None if offset == 0 => rot.forward(&xt, 0),
            None => rot.forward(&xt, "past"),
            Some(kind) => {
                let pos = get(&case, "positions");
                let syms: &[(usize, &str)] = if kind == "seq" {
                    &[(0, "seq")]
                } else {
                    &[(0, "b"), (1, "seq")]
                };
                let p = tr.input("positions", DType::I64, shape_of(&pos, syms));
                inputs.push(("positions", pos));
                rot.forward_with_positions(&xt, &p)
            }
        };
        tr.output("y", &y);
        let out = run_graph(tr, &env(&[], inputs, &[("past", offset)]));
        assert_close(&n, out.get("y").unwrap(), &get(&case, "out"), RTOL, ATOL);
    }
}

#[test]
fn rope_rejects_a_wrong_head_dim_and_an_odd_rotary_dim() {
    let tr = Trace::new();
    let x = tr.input("x", DType::F32, dims![1, 2, "seq", 8]);
    let _ = RotaryEmbedding::new(&RotaryConfig::new(16, 1e4)).forward(&x, 0);
    let e = tr.finish().unwrap_err();
    assert!(e.to_string().contains("head_dim"), "{e}");
    assert!(e.location.starts_with("nn/tests/attention.rs:"), "{e}");

    let tr = Trace::new();
    let x = tr.input("x", DType::F32, dims![1, 2, "seq", 8]);
    let _ = RotaryEmbedding::new(&RotaryConfig::new(8, 1e4).partial(5)).forward(&x, 0);
    let e = tr.finish().unwrap_err();
    assert!(e.to_string().contains("rotary_dim"), "{e}");
}

/// Llama 3.1's scaling as llama.cpp's converter writes it into GGUF files (`rope_freqs`:
/// one divisor per frequency, f32), then applied as [`RopeScaling::Factors`], gives Hugging
/// Face's `llama3` inverse frequencies to within an f32 ulp.
#[test]
fn rope_frequency_factors_reproduce_llama3_scaling() {
    let mut checked = 0;
    for case in cases("rope") {
        let s = &case["scaling"];
        if s["type"].as_str() != Some("llama3") {
            continue;
        }
        let (factor, low, high) = (
            s["factor"].as_f64().unwrap(),
            s["low_freq_factor"].as_f64().unwrap(),
            s["high_freq_factor"].as_f64().unwrap(),
        );
        let old = usize_of(s, "original_max_position_embeddings") as f64;
        let plain = rotary_config(&case).with_scaling(RopeScaling::None);
        let factors: Vec<f32> = plain
            .inv_freq()
            .iter()
            .map(|&f| {
                let wavelen = 2.0 * std::f64::consts::PI / f64::from(f);
                let d = if wavelen < old / high {
                    1.0
                } else if wavelen > old / low {
                    factor
                } else {
                    let smooth = (old / wavelen - low) / (high - low);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                };
                d as f32
            })
            .collect();
        let got = plain
            .with_scaling(RopeScaling::Factors(factors.into()))
            .inv_freq();
        let want = get(&case, "inv_freq");
        for (i, (g, w)) in got.iter().zip(want.as_slice::<f32>().unwrap()).enumerate() {
            let ulps = (g.to_bits() as i64 - w.to_bits() as i64).abs();
            assert!(ulps <= 1, "{} [{i}]: {g} vs {w}", name(&case));
        }
        checked += 1;
    }
    assert!(checked > 0, "no llama3 RoPE fixture");
}

#[test]
fn rope_rejects_missing_or_bad_frequency_factors() {
    for (factors, needle) in [
        (vec![1.0f32; 3], "4 needed"),
        (vec![1.0, 2.0, 0.0, 1.0], "factor 2 is 0"),
        (vec![1.0, f32::NAN, 1.0, 1.0], "factor 1 is NaN"),
    ] {
        let tr = Trace::new();
        let x = tr.input("x", DType::F32, dims![1, 2, "seq", 8]);
        let cfg = RotaryConfig::new(8, 1e4).with_scaling(RopeScaling::Factors(factors.into()));
        let _ = RotaryEmbedding::new(&cfg).forward(&x, 0);
        let e = tr.finish().unwrap_err();
        assert!(e.to_string().contains(needle), "{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Scaled dot-product attention

#[test]
fn sdpa_matches_torch() {
    for case in cases("sdpa") {
        let n = name(&case);
        let (q, k, v) = (get(&case, "q"), get(&case, "k"), get(&case, "v"));
        let r = q.shape().len();
        let tr = Trace::new();
        let qt = tr.input("q", DType::F32, shape_of(&q, &[(r - 2, "lq")]));
        let kt = tr.input("k", DType::F32, shape_of(&k, &[(r - 2, "lk")]));
        let vt = tr.input("v", DType::F32, shape_of(&v, &[(r - 2, "lk")]));
        let mut inputs = vec![("q", q), ("k", k), ("v", v)];
        let mask = has(&case, "mask").then(|| {
            let m = get(&case, "mask");
            let mr = m.shape().len();
            let t = tr.input(
                "mask",
                m.dtype(),
                shape_of(&m, &[(mr - 2, "lq"), (mr - 1, "lk")]),
            );
            inputs.push(("mask", m));
            t
        });
        let causal = case["causal"].as_bool().unwrap();
        let scale = case["scale"].as_f64();
        let y = scaled_dot_product_attention(&qt, &kt, &vt, mask.as_ref(), causal, scale);
        tr.output("y", &y);
        let out = run_graph(tr, &env(&[], inputs, &[]));
        assert_close(&n, out.get("y").unwrap(), &get(&case, "out"), RTOL, ATOL);
    }
}

#[test]
fn sdpa_rejects_head_counts_that_do_not_divide() {
    let tr = Trace::new();
    let q = tr.input("q", DType::F32, dims![1, 3, "l", 4]);
    let k = tr.input("k", DType::F32, dims![1, 2, "l", 4]);
    let _ = scaled_dot_product_attention(&q, &k, &k, None, true, None);
    let e = tr.finish().unwrap_err();
    assert!(e.to_string().contains("grouped-query"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// MultiheadAttention

#[test]
fn multihead_attention_matches_torch() {
    for case in cases("mha") {
        let n = name(&case);
        let mut cfg = MultiheadAttentionConfig::new(
            usize_of(&case, "embed_dim"),
            usize_of(&case, "num_heads"),
        )
        .with_kv_dims(usize_of(&case, "kdim"), usize_of(&case, "vdim"));
        if !case["bias"].as_bool().unwrap() {
            cfg = cfg.no_bias();
        }
        let mha = MultiheadAttention::new(&cfg);
        assert_eq!(mha.state_dict_keys(), keys(&case), "{n}: state_dict keys");

        let query = get(&case, "query");
        let batched = query.shape().len() == 3;
        let (l, s) = if batched { (1, 1) } else { (0, 0) };
        let tr = Trace::new();
        let qt = tr.input("query", DType::F32, shape_of(&query, &[(l, "L")]));
        let mut inputs = vec![("query", query)];
        let (kt, vt) = if case["self_attn"].as_bool().unwrap() {
            (qt.clone(), qt.clone())
        } else {
            let (key, value) = (get(&case, "key"), get(&case, "value"));
            let kt = tr.input("key", DType::F32, shape_of(&key, &[(s, "S")]));
            let vt = tr.input("value", DType::F32, shape_of(&value, &[(s, "S")]));
            inputs.push(("key", key));
            inputs.push(("value", value));
            (kt, vt)
        };
        let kpm = has(&case, "key_padding_mask").then(|| {
            let m = get(&case, "key_padding_mask");
            let last = m.shape().len() - 1;
            let sym = if case["self_attn"].as_bool().unwrap() {
                "L"
            } else {
                "S"
            };
            let t = tr.input("kpm", m.dtype(), shape_of(&m, &[(last, sym)]));
            inputs.push(("kpm", m));
            t
        });
        let attn_mask = has(&case, "attn_mask").then(|| {
            let m = get(&case, "attn_mask");
            let r = m.shape().len();
            let sym = if case["self_attn"].as_bool().unwrap() {
                "L"
            } else {
                "S"
            };
            let t = tr.input(
                "attn_mask",
                m.dtype(),
                shape_of(&m, &[(r - 2, "L"), (r - 1, sym)]),
            );
            inputs.push(("attn_mask", m));
            t
        });
        let is_causal = case["is_causal"].as_bool().unwrap();
        let y = mha.forward(&qt, &kt, &vt, kpm.as_ref(), attn_mask.as_ref(), is_causal);
        tr.output("y", &y);
        let out = run_graph(tr, &env(&params(&case), inputs, &[]));
        assert_close(&n, out.get("y").unwrap(), &get(&case, "out"), RTOL, ATOL);
    }
}

#[test]
fn multihead_attention_is_causal_needs_no_mask_here() {
    // torch wants the causal mask as `attn_mask` next to `is_causal`; Kiln builds it.
    let case = cases("mha")
        .into_iter()
        .find(|c| c["name"] == "mha_self_causal_padding")
        .unwrap();
    let cfg =
        MultiheadAttentionConfig::new(usize_of(&case, "embed_dim"), usize_of(&case, "num_heads"));
    let mha = MultiheadAttention::new(&cfg);
    let query = get(&case, "query");
    let kpm = get(&case, "key_padding_mask");
    let tr = Trace::new();
    let qt = tr.input("query", DType::F32, shape_of(&query, &[(1, "L")]));
    let mt = tr.input("kpm", DType::Bool, shape_of(&kpm, &[(1, "L")]));
    tr.output("y", &mha.forward(&qt, &qt, &qt, Some(&mt), None, true));
    let out = run_graph(
        tr,
        &env(&params(&case), vec![("query", query), ("kpm", kpm)], &[]),
    );
    assert_close(
        "mha causal",
        out.get("y").unwrap(),
        &get(&case, "out"),
        RTOL,
        ATOL,
    );
}

// ---------------------------------------------------------------------------------------------
// Grouped-query Attention

fn attention_config(case: &Json) -> AttentionConfig {
    let head_dim = usize_of(case, "head_dim");
    AttentionConfig::new(
        usize_of(case, "hidden"),
        usize_of(case, "heads"),
        usize_of(case, "kv_heads"),
        head_dim,
    )
    .with_bias(
        case["qkv_bias"].as_bool().unwrap(),
        case["o_bias"].as_bool().unwrap(),
    )
    .with_rope(Some(RotaryConfig::new(
        head_dim,
        case["theta"].as_f64().unwrap(),
    )))
}

#[test]
fn attention_matches_hugging_face_llama_and_qwen2() {
    for case in cases("attention") {
        let n = name(&case);
        let attn = Attention::new(&attention_config(&case));
        assert_eq!(attn.state_dict_keys(), keys(&case), "{n}: state_dict keys");
        let x = get(&case, "x");
        let tr = Trace::new();
        let xt = tr.input("x", DType::F32, shape_of(&x, &[(1, "seq")]));
        let mut inputs = vec![("x", x)];
        let mask = has(&case, "padding_mask").then(|| {
            let m = get(&case, "padding_mask");
            let t = tr.input("mask", DType::Bool, shape_of(&m, &[(1, "seq")]));
            inputs.push(("mask", m));
            t
        });
        let pos = has(&case, "positions").then(|| {
            let p = get(&case, "positions");
            let t = tr.input("positions", DType::I64, shape_of(&p, &[(1, "seq")]));
            inputs.push(("positions", p));
            t
        });
        let y = attn.forward_full(&xt, pos.as_ref(), mask.as_ref(), None);
        tr.output("y", &y);
        let out = run_graph(tr, &env(&params(&case), inputs, &[]));
        assert_close(&n, out.get("y").unwrap(), &get(&case, "out"), RTOL, ATOL);
    }
}

/// Columns `start..end` of axis 1 of a dense tensor.
fn narrow1(t: &Value, start: usize, end: usize) -> Value {
    let shape = t.shape().to_vec();
    let inner: usize = shape[2..].iter().product();
    let outer = shape[0];
    let n = shape[1];
    let mut new_shape = shape.clone();
    new_shape[1] = end - start;
    let pick = |i: usize| (start * inner..end * inner).map(move |j| i * n * inner + j);
    let idx: Vec<usize> = (0..outer).flat_map(pick).collect();
    match t.dtype() {
        DType::F32 => {
            let d = t.as_slice::<f32>().unwrap();
            Value::from_vec(new_shape, idx.iter().map(|&i| d[i]).collect::<Vec<_>>()).unwrap()
        }
        DType::I64 => {
            let d = t.as_slice::<i64>().unwrap();
            Value::from_vec(new_shape, idx.iter().map(|&i| d[i]).collect::<Vec<_>>()).unwrap()
        }
        DType::Bool => {
            let d = t.as_slice::<bool>().unwrap();
            Value::from_vec(new_shape, idx.iter().map(|&i| d[i]).collect::<Vec<_>>()).unwrap()
        }
        other => panic!("narrow1 of {other}"),
    }
}

#[test]
fn cached_attention_equals_the_full_pass_step_by_step() {
    const MAX_SEQ: usize = 8;
    for case in cases("attention") {
        let n = name(&case);
        let x = get(&case, "x");
        let (b, seq) = (x.shape()[0], x.shape()[1]);
        let cfg = attention_config(&case).with_cache(b, MAX_SEQ);
        let attn = <Attention as Module>::build(&cfg, "layers.0.self_attn.");
        let mut states = Vec::new();
        attn.visit_states(&mut |s| states.push((s.name().to_string(), s.shape().to_string())));
        let kv = usize_of(&case, "kv_heads");
        let hd = usize_of(&case, "head_dim");
        let shape = format!("[{b}, {kv}, {MAX_SEQ}, {hd}]");
        assert_eq!(
            states,
            [
                ("layers.0.self_attn.k".to_string(), shape.clone()),
                ("layers.0.self_attn.v".to_string(), shape)
            ],
            "{n}: cache state"
        );
        assert!(attn.state_dict_keys().iter().all(|k| !k.ends_with(".k")));
        let cache = attn.cache.as_ref().unwrap();
        let params: Vec<(String, Value)> = params(&case)
            .into_iter()
            .map(|(k, v)| (format!("layers.0.self_attn.{k}"), v))
            .collect();

        // One graph serves every step: `past` and `seq` are symbols.
        let tr = Trace::new();
        let xt = tr.input("x", DType::F32, dims![b, "seq", cfg.hidden_size]);
        let kv_len = Dim::symbol("past") + Dim::symbol("seq");
        let mask = has(&case, "padding_mask")
            .then(|| tr.input("mask", DType::Bool, Shape(vec![Dim::from(b), kv_len])));
        let pos =
            has(&case, "positions").then(|| tr.input("positions", DType::I64, dims![b, "seq"]));
        let y = attn.forward_full(&xt, pos.as_ref(), mask.as_ref(), Some(cache));
        tr.output("y", &y);
        let graph = tr.finish().unwrap_or_else(|e| panic!("{n}: {e}"));

        let zeros =
            Value::from_vec(vec![b, kv, MAX_SEQ, hd], vec![0f32; b * kv * MAX_SEQ * hd]).unwrap();
        let (mut k_state, mut v_state) = (zeros.clone(), zeros);
        let want = get(&case, "out");
        let mut past = 0;
        for step in [seq - 2, 1, 1] {
            let mut e = env(
                &params,
                vec![("x", narrow1(&x, past, past + step))],
                &[("past", past as i64)],
            );
            e.set_state("layers.0.self_attn.k", k_state.clone());
            e.set_state("layers.0.self_attn.v", v_state.clone());
            if mask.is_some() {
                e.set_input("mask", narrow1(&get(&case, "padding_mask"), 0, past + step));
            }
            if pos.is_some() {
                e.set_input(
                    "positions",
                    narrow1(&get(&case, "positions"), past, past + step),
                );
            }
            let out = run(&graph, &e).unwrap_or_else(|e| panic!("{n}: {e}"));
            assert_close(
                &format!("{n} past={past}"),
                out.get("y").unwrap(),
                &narrow1(&want, past, past + step),
                RTOL,
                ATOL,
            );
            k_state = out.state("layers.0.self_attn.k").unwrap().clone();
            v_state = out.state("layers.0.self_attn.v").unwrap().clone();
            assert_eq!(
                k_state.shape(),
                [b, kv, MAX_SEQ, hd],
                "{n}: the cache keeps its capacity"
            );
            past += step;
        }
    }
}

#[test]
fn kv_cache_overflow_is_a_bounds_error_at_run_time() {
    let cache = <KvCache as Module>::build(&KvCacheConfig::new(1, 1, 4, 2), "c.");
    let tr = Trace::new();
    let k = tr.input("k", DType::F32, dims![1, 1, "seq", 2]);
    let (k_all, _) = cache.update(&k, &k);
    tr.output("k", &k_all);
    let g = tr.finish().unwrap();
    let zeros = Value::from_vec(vec![1, 1, 4, 2], vec![0f32; 8]).unwrap();
    let e = Env::new()
        .input(
            "k",
            Value::from_vec(vec![1, 1, 2, 2], vec![1f32; 4]).unwrap(),
        )
        .state("c.k", zeros.clone())
        .state("c.v", zeros)
        .bind("past", 3);
    let err = run(&g, &e).unwrap_err();
    assert!(err.to_string().contains("slice_update"), "{err}");
}

#[test]
fn attention_rejects_heads_that_do_not_group() {
    let attn = Attention::new(&AttentionConfig::new(24, 3, 2, 8));
    let tr = Trace::new();
    let x = tr.input("x", DType::F32, dims![1, "seq", 24]);
    let _: Tensor = attn.forward(&x);
    let e = tr.finish().unwrap_err();
    assert!(e.to_string().contains("num_kv_heads"), "{e}");
}
