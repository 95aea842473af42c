//! The example carried through `docs/compiler.md`: a graph, the optimized graph, its kernel
//! in loop IR and its memory plan. The test fails if the document is out of date.

use kiln_compiler::egraph::OptimizeOptions;
use kiln_ir::{DType, Dim, Graph, Scalar, Shape};

/// `reshape(reshape(neg(neg((x @ permute(w)) / 2 * 1))))`: every step is one the optimizer
/// or the scheduler should remove.
pub fn example() -> Graph {
    let n = Dim::symbol("n");
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, Shape(vec![n.clone(), 8.into()]))
        .unwrap();
    let w = g.param("w", DType::F32, Shape::new([16, 8])).unwrap();
    let wt = g.permute(w, &[1, 0]).unwrap();
    let h = g.matmul(x, wt).unwrap();
    let two = g.scalar(Scalar::Float(2.0), DType::F32).unwrap();
    let h = g.div(h, two).unwrap();
    let b = g.param("b", DType::F32, Shape::new([16])).unwrap();
    let h = g.add(h, b).unwrap();
    let h = g.tanh(h).unwrap();
    let nh = g.neg(h).unwrap();
    let h = g.neg(nh).unwrap();
    let r = g
        .reshape(h, Shape(vec![n.clone(), 4.into(), 4.into()]))
        .unwrap();
    let r = g.reshape(r, Shape(vec![n, 16.into()])).unwrap();
    g.set_output("y", r).unwrap();
    g
}

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/compiler.md")).unwrap()
}

fn assert_in_doc(what: &str, text: &str) {
    let doc = doc();
    assert!(
        doc.contains(text.trim_end()),
        "docs/compiler.md does not show the current {what}:\n{text}"
    );
}

/// Prints the blocks the document shows (run with `--ignored --nocapture` to refresh it).
#[test]
#[ignore]
fn print_doc_blocks() {
    let g = example();
    let compiled = kiln_compiler::compile(&g, Some(&OptimizeOptions::default())).unwrap();
    let plain = kiln_compiler::compile(&g, None).unwrap();
    let bindings = kiln_ir::Bindings::new().with("n", 512);
    println!("{g}\n{}\n{}", compiled.graph, compiled.schedule.kernels[0]);
    println!("{}", compiled.memory);
    for k in plain.schedule.kernels.iter() {
        println!("{k}");
    }
    println!(
        "before: {}\nafter:  {}",
        plain.report(&bindings).unwrap(),
        compiled.report(&bindings).unwrap()
    );
}

#[test]
fn docs_compiler_md_is_current() {
    let g = example();
    assert_in_doc("traced graph", &g.to_string());
    let compiled = kiln_compiler::compile(&g, Some(&OptimizeOptions::default())).unwrap();
    assert_in_doc("optimized graph", &compiled.graph.to_string());
    assert_eq!(compiled.schedule.kernels.len(), 1);
    assert_in_doc("kernel", &compiled.schedule.kernels[0].to_string());
    let plain = kiln_compiler::compile(&g, None).unwrap();
    let bindings = kiln_ir::Bindings::new().with("n", 512);
    let line = format!(
        "before: {}\nafter:  {}",
        plain.report(&bindings).unwrap(),
        compiled.report(&bindings).unwrap()
    );
    assert_in_doc("report", &line);
}
