//! Which kernels may write their output over an input (`Kernel::in_place_candidates`).

use kiln_compiler::schedule::schedule;
use kiln_ir::{DType, Dim, Graph, Shape};

fn n() -> Dim {
    Dim::symbol("n")
}

#[test]
fn same_index_elementwise_reads_allow_in_place() {
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, Shape(vec![n(), 16.into()]))
        .unwrap();
    let b = g.input("b", DType::F32, Shape::new([16])).unwrap();
    let y = g.tanh(x).unwrap();
    let y = g.add(y, b).unwrap();
    g.set_output("y", y).unwrap();
    let s = schedule(&g).unwrap();
    assert_eq!(s.kernels.len(), 1);
    let k = &s.kernels[0];
    let cands = k.in_place_candidates();
    // x is read at the store's index; b is broadcast (another index, another size).
    assert_eq!(cands.len(), 1, "{k}");
    let (out, input) = cands[0];
    let x_buf = s.launches[0].inputs[0];
    assert_eq!(input, x_buf, "{k}");
    assert_eq!(out, s.launches[0].outputs[0]);
}

#[test]
fn transposed_or_shifted_reads_refuse_in_place() {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, Shape::new([7, 7])).unwrap();
    let t = g.permute(x, &[1, 0]).unwrap();
    let y = g.exp(t).unwrap();
    g.set_output("y", y).unwrap();
    let s = schedule(&g).unwrap();
    assert!(s.kernels.iter().all(|k| k.in_place_candidates().is_empty()));

    let mut g = Graph::new();
    let x = g.input("x", DType::F32, Shape::new([9])).unwrap();
    let a = g.slice(x, 0, 1, 9, 1).unwrap();
    let b = g.slice(x, 0, 0, 8, 1).unwrap();
    let y = g.sub(a, b).unwrap();
    g.set_output("y", y).unwrap();
    let s = schedule(&g).unwrap();
    assert!(s.kernels.iter().all(|k| k.in_place_candidates().is_empty()));
}

#[test]
fn reductions_never_write_in_place() {
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, Shape(vec![n(), 5.into()]))
        .unwrap();
    let m = g.max(x, &[1], true).unwrap();
    let y = g.sub(x, m).unwrap();
    g.set_output("y", y).unwrap();
    let s = schedule(&g).unwrap();
    assert!(s.kernels.iter().all(|k| k.in_place_candidates().is_empty()));
}
