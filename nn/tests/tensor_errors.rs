//! Misuse of the Tensor API: the trace records the first error with the exact `file:line` of
//! the offending call in the model code, and the message names the op and the shapes.

use kiln_ir::DType;
use kiln_nn::{dims, Tensor, Trace};

/// Finishes `trace`, expecting an error raised at `line` of this file whose message holds
/// every one of `parts`.
#[track_caller]
fn expect_error(trace: Trace, line: u32, parts: &[&str]) {
    let e = trace.finish().expect_err("the trace should have failed");
    let at = format!("{}:{line}:", file!());
    assert!(
        e.location.starts_with(&at),
        "error at {}, want {at}: {e}",
        e.location
    );
    let message = e.error.to_string();
    for p in parts {
        assert!(message.contains(p), "{message:?} should mention {p:?}");
    }
}

fn f32_input(trace: &Trace, name: &str, shape: kiln_ir::Shape) -> Tensor {
    trace.input(name, DType::F32, shape)
}

#[test]
fn bad_dim_index() {
    for (dim, op) in [
        (2isize, "sum"),
        (-3, "softmax"),
        (5, "transpose"),
        (-3, "size"),
    ] {
        let tr = Trace::new();
        let x = f32_input(&tr, "x", dims![2, 3]);
        let line = match op {
            "sum" => (x.sum(dim, false), line!()).1,
            "softmax" => (x.softmax(dim), line!()).1,
            "transpose" => (x.transpose(0, dim), line!()).1,
            _ => (x.size(dim), line!()).1,
        };
        let d = dim.to_string();
        expect_error(tr, line, &[op, "dim", &d, "out of range", "f32[2, 3]"]);
    }
}

#[test]
fn unsqueeze_past_the_end() {
    let tr = Trace::new();
    let x = f32_input(&tr, "x", dims![2, 3]);
    let (_, line) = (x.unsqueeze(3), line!());
    expect_error(tr, line, &["unsqueeze", "dim 3", "f32[2, 3]"]);
}

#[test]
fn reshape_that_does_not_divide() {
    let tr = Trace::new();
    let x = f32_input(&tr, "x", dims![2, 3]);
    let (_, line) = (x.reshape(dims![-1, 4]), line!());
    expect_error(tr, line, &["reshape", "[-1, 4]", "f32[2, 3]", "6 elements"]);

    let tr = Trace::new();
    let x = f32_input(&tr, "x", dims!["seq", 3]);
    let (_, line) = (x.view(dims![4, -1]), line!());
    expect_error(tr, line, &["view", "[4, -1]", "f32[seq, 3]"]);
}

#[test]
fn reshape_to_another_element_count() {
    let tr = Trace::new();
    let x = f32_input(&tr, "x", dims![2, 3]);
    let (_, line) = (x.reshape(dims![4, 2]), line!());
    expect_error(tr, line, &["reshape", "f32[2, 3]", "[4, 2]", "6 vs 8"]);
}

#[test]
fn reshape_with_two_minus_ones() {
    let tr = Trace::new();
    let x = f32_input(&tr, "x", dims![2, 3]);
    let (_, line) = (x.reshape(dims![-1, -1]), line!());
    expect_error(
        tr,
        line,
        &["reshape", "[-1, -1]", "f32[2, 3]", "more than one -1"],
    );
}

#[test]
fn squeeze_of_a_dim_that_is_not_1() {
    let tr = Trace::new();
    let x = f32_input(&tr, "x", dims![2, "seq"]);
    let (_, line) = (x.squeeze(-1), line!());
    expect_error(
        tr,
        line,
        &["squeeze", "dim -1", "f32[2, seq]", "size seq, not 1"],
    );
}

#[test]
fn matmul_shape_mismatch() {
    let tr = Trace::new();
    let a = f32_input(&tr, "a", dims![2, 3]);
    let b = f32_input(&tr, "b", dims![4, 5]);
    let (_, line) = (a.matmul(&b), line!());
    expect_error(tr, line, &["matmul", "f32[2, 3]", "f32[4, 5]", "3 and 4"]);

    // A vector operand: the message shows the shapes as given, not the unsqueezed ones.
    let tr = Trace::new();
    let a = f32_input(&tr, "a", dims![3]);
    let b = f32_input(&tr, "b", dims![4, 5]);
    let (_, line) = (a.matmul(&b), line!());
    expect_error(tr, line, &["matmul", "f32[3]", "f32[4, 5]"]);

    // Batch dims that do not broadcast (the IR's check).
    let tr = Trace::new();
    let a = f32_input(&tr, "a", dims![2, 3, 4]);
    let b = f32_input(&tr, "b", dims![3, 4, 5]);
    let (_, line) = (a.matmul(&b), line!());
    expect_error(
        tr,
        line,
        &["matmul", "f32[2, 3, 4]", "f32[3, 4, 5]", "batch"],
    );

    let tr = Trace::new();
    let a = f32_input(&tr, "a", dims![2, 3]);
    let s = f32_input(&tr, "s", dims![]);
    let (_, line) = (a.matmul(&s), line!());
    expect_error(tr, line, &["matmul", "f32[2, 3]", "f32[]"]);
}

#[test]
fn tensors_from_two_traces() {
    let t1 = Trace::new();
    let a = f32_input(&t1, "a", dims![2, 3]);
    let t2 = Trace::new();
    let b = t2.input("b", DType::I64, dims![3]);
    let (_, line) = (&a + &b, line!());
    let (_, later) = (a.matmul(&b.to(DType::F32)), line!());
    assert!(later > line);
    t2.finish().expect("the other trace has no error");
    // The first error is kept: the `+`, not the later matmul.
    expect_error(
        t1,
        line,
        &["add", "f32[2, 3]", "i64[3]", "different traces"],
    );

    let t1 = Trace::new();
    let a = f32_input(&t1, "a", dims![2, 3]);
    let t2 = Trace::new();
    let b = f32_input(&t2, "b", dims![3, 4]);
    let (_, line) = (a.matmul(&b), line!());
    drop(t2);
    expect_error(
        t1,
        line,
        &["matmul", "f32[2, 3]", "f32[3, 4]", "different traces"],
    );

    let t1 = Trace::new();
    let a = f32_input(&t1, "a", dims![2, 3]);
    let t2 = Trace::new();
    let b = f32_input(&t2, "b", dims![2, 3]);
    let (_, line) = (Tensor::cat(&[a, b], 0), line!());
    drop(t2);
    expect_error(t1, line, &["cat", "different traces"]);

    let t1 = Trace::new();
    let a = f32_input(&t1, "a", dims![2, 3]);
    let t2 = Trace::new();
    let m = t2.input("m", DType::Bool, dims![2, 3]);
    let (_, line) = (a.masked_fill(&m, 0.0), line!());
    drop(t2);
    expect_error(t1, line, &["masked_fill", "bool[2, 3]", "different traces"]);
}

#[test]
fn cat_of_different_ranks() {
    let tr = Trace::new();
    let a = f32_input(&tr, "a", dims![2, 3]);
    let b = f32_input(&tr, "b", dims![3]);
    let (_, line) = (Tensor::cat(&[a, b], 0), line!());
    expect_error(tr, line, &["cat", "different ranks", "f32[2, 3], f32[3]"]);

    let tr = Trace::new();
    let a = f32_input(&tr, "a", dims![2, 3]);
    let b = f32_input(&tr, "b", dims![2, 4]);
    let (_, line) = (Tensor::cat(&[a, b], 0), line!());
    expect_error(
        tr,
        line,
        &["concat", "f32[2, 3], f32[2, 4]", "every axis but 0"],
    );
}

#[test]
fn stack_of_different_shapes() {
    let tr = Trace::new();
    let a = f32_input(&tr, "a", dims![2, 3]);
    let b = f32_input(&tr, "b", dims![3, 2]);
    let (_, line) = (Tensor::stack(&[a, b], -1), line!());
    expect_error(
        tr,
        line,
        &["stack", "different shapes", "f32[2, 3], f32[3, 2]"],
    );
}

#[test]
fn t_of_a_rank_3_tensor() {
    let tr = Trace::new();
    let x = f32_input(&tr, "x", dims![2, 3, 4]);
    let (_, line) = (x.t(), line!());
    expect_error(tr, line, &["t:", "f32[2, 3, 4]"]);
}

#[test]
fn split_and_chunk_misuse() {
    let tr = Trace::new();
    let x = f32_input(&tr, "x", dims![2, "seq"]);
    let (_, line) = (x.split(2, -1), line!());
    expect_error(tr, line, &["split", "f32[2, seq]", "symbolic"]);

    let tr = Trace::new();
    let x = f32_input(&tr, "x", dims![2, "seq"]);
    let (_, line) = (x.chunk(2, 1), line!());
    expect_error(tr, line, &["chunk", "f32[2, seq]", "2 equal pieces"]);

    let tr = Trace::new();
    let x = f32_input(&tr, "x", dims![2, 7]);
    let (_, line) = (x.split_sizes(&[3.into(), 3.into()], 1), line!());
    expect_error(tr, line, &["split_sizes", "f32[2, 7]", "add up to 6"]);
}

#[test]
fn an_error_inside_a_composite_points_at_the_model_code() {
    // `var` is written with `mean`, `sub` and a reduction; the location is still the caller.
    let tr = Trace::new();
    let x = f32_input(&tr, "x", dims![2, 3]);
    let (_, line) = (x.var([0, 4], true, 1), line!());
    expect_error(tr, line, &["var", "dim 4", "f32[2, 3]"]);

    // `2 - x` is `-x + 2` inside: a bool `x` fails in the `neg`, reported at the `-`.
    let tr = Trace::new();
    let x = tr.input("x", DType::Bool, dims![2]);
    let (_, line) = (2 - &x, line!());
    expect_error(tr, line, &["neg", "bool[2]"]);
}
