//! `kiln inspect` on good and bad IR files.

use std::process::Command;

fn kiln(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("run kiln");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-inspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const GRAPH: &str = r#"graph {
  %0 = input "x" : f32[seq, 64]
  %1 = param "w" : q4_0[32, 64]
  %2 = matmul %0, %1 trans_b : f32[seq, 32]
  %3 = exp %2 : f32[seq, 32]
  %4 = reduce.sum %3 axes=[1] keepdim : f32[seq, 1]
  output "y" = %4
}
"#;

#[test]
fn inspect_prints_graph_and_summary() {
    let path = write("good.kiln", GRAPH);
    let (ok, stdout, stderr) = kiln(&["inspect", path.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("%2 = matmul %0, %1 trans_b : f32[seq, 32]"),
        "{stdout}"
    );
    assert!(stdout.contains("inputs: x: f32[seq, 64]"), "{stdout}");
    assert!(stdout.contains("params: w: q4_0[32, 64]"), "{stdout}");
    assert!(stdout.contains("outputs: y: f32[seq, 1]"), "{stdout}");
    assert!(stdout.contains("symbols: seq"), "{stdout}");
    assert!(
        stdout.contains("ops: exp 1, matmul 1, reduce.sum 1"),
        "{stdout}"
    );
}

#[test]
fn inspect_reports_type_errors_with_line_and_shapes() {
    let bad = GRAPH.replace(
        "%1 = param \"w\" : q4_0[32, 64]",
        "%1 = param \"w\" : q4_0[32, 96]",
    );
    let path = write("bad.kiln", &bad);
    let (ok, _, stderr) = kiln(&["inspect", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("is not a valid Kiln graph"), "{stderr}");
    assert!(stderr.contains("line 4"), "{stderr}");
    assert!(stderr.contains("f32[seq, 64], q4_0[32, 96]"), "{stderr}");
}

#[test]
fn inspect_reports_missing_files() {
    let (ok, _, stderr) = kiln(&["inspect", "/nonexistent/graph.kiln"]);
    assert!(!ok);
    assert!(
        stderr.contains("cannot read /nonexistent/graph.kiln"),
        "{stderr}"
    );
}

#[test]
fn inspect_traces_a_builtin_model() {
    let (ok, stdout, stderr) = kiln(&["inspect", "smollm2-135m", "--summary"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("inputs: ids: i64[1, seq]"), "{stdout}");
    assert!(
        stdout.contains("outputs: logits: f32[1, seq, 49152]"),
        "{stdout}"
    );
    assert!(stdout.contains("symbols: past, seq"), "{stdout}");
}

#[test]
fn inspect_compiles_and_reports() {
    let path = write("compile.kiln", GRAPH);
    let (ok, stdout, stderr) = kiln(&[
        "inspect",
        path.to_str().unwrap(),
        "--summary",
        "--compile",
        "--egraph",
        "--bind",
        "seq=8",
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("compiled at seq=8:"), "{stdout}");
    assert!(stdout.contains("without the optimizer:"), "{stdout}");
    assert!(stdout.contains("with the optimizer:"), "{stdout}");
    assert!(stdout.contains("kernels"), "{stdout}");
    assert!(stdout.contains("stage simplify"), "{stdout}");
    let (ok, _, stderr) = kiln(&[
        "inspect",
        path.to_str().unwrap(),
        "--compile",
        "--bind",
        "seq",
    ]);
    assert!(!ok);
    assert!(stderr.contains("expected SYMBOL=VALUE"), "{stderr}");
}

#[test]
fn inspect_prints_wgsl() {
    let path = write("wgsl.kiln", GRAPH);
    let (ok, stdout, stderr) = kiln(&["inspect", path.to_str().unwrap(), "--summary", "--wgsl"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("@compute @workgroup_size("), "{stdout}");
    // The Q4_0 weight is dequantized in the shader.
    assert!(stdout.contains("fn kiln_dq_1(i: i32) -> f32"), "{stdout}");
}
