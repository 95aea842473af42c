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
