//! The `kiln` binary: errors on bad input (no panics), and, with the SmolLM2 test model in
//! `tests/models/` (fetched by `.ci/run`), `run`, `logits` and `perplexity` end to end.

use std::path::PathBuf;
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env("KILN_HOME", std::env::temp_dir().join("kiln-cli-test-home"))
        .output()
        .expect("run kiln")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn model() -> Option<String> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.exists() {
        return Some(p.display().to_string());
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must provide {}",
        p.display()
    );
    eprintln!("skipped: no SmolLM2 GGUF at {}", p.display());
    None
}

#[test]
fn bad_model_files_are_clear_errors() {
    let o = kiln(&["run", "/nonexistent/model.gguf", "-p", "hi"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("/nonexistent/model.gguf does not exist"),
        "{}",
        stderr(&o)
    );

    let dir = std::env::temp_dir().join(format!("kiln-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.gguf");
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(1u64.to_le_bytes()); // one tensor
    bytes.extend(u64::MAX.to_le_bytes()); // absurd metadata count
    std::fs::write(&bad, &bytes).unwrap();
    let o = kiln(&["run", bad.to_str().unwrap(), "-p", "hi"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("malformed at byte offset 16") && e.contains("metadata count"),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn run_logits_and_perplexity_on_smollm2() {
    let Some(m) = model() else { return };
    let o = kiln(&[
        "run",
        &m,
        "--raw",
        "-p",
        "The capital of France is",
        "--temperature",
        "0",
        "-n",
        "6",
        "--ignore-eos",
        "-c",
        "64",
        "-t",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.starts_with("The capital of France is Paris."),
        "{text:?}"
    );
    assert!(stderr(&o).contains("tok/s"), "{}", stderr(&o));

    let dir = std::env::temp_dir().join(format!("kiln-cli-logits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("l.npy");
    let o = kiln(&[
        "logits",
        &m,
        "--ids",
        "504,3575,282",
        "-o",
        out.to_str().unwrap(),
        "-c",
        "16",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&out).unwrap();
    let header = String::from_utf8_lossy(&bytes[10..128]);
    assert!(
        header.contains("'descr': '<f4'") && header.contains("(3, 49152)"),
        "{header}"
    );
    assert_eq!(bytes.len(), 128 + 3 * 49152 * 4);

    let text_file = dir.join("t.txt");
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(12);
    std::fs::write(&text_file, text).unwrap();
    let o = kiln(&[
        "perplexity",
        &m,
        text_file.to_str().unwrap(),
        "--chunk",
        "64",
        "--chunks",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let ppl: f64 = stdout
        .split("PPL = ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no perplexity in {stdout:?}"));
    // A repeated sentence is easy to predict once seen.
    assert!(ppl > 1.0 && ppl < 3.0, "perplexity {ppl}");
    std::fs::remove_dir_all(&dir).unwrap();
}
