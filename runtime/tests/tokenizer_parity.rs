//! Kiln's tokenizer against the reference ids of tests/fixtures/tokenizer_smollm2.json (made by
//! scripts/tokenizer_reference.py from transformers, cross-checked with llama.cpp) on the real
//! SmolLM2 GGUF: encode, decode, streaming decode and the chat template, for every string.
//!
//! The GGUF is looked for at tests/models/SmolLM2-135M-Instruct.Q4_1.gguf under the workspace
//! root (where CI downloads it), then /work/models/; without it the GGUF tests are skipped. The
//! `from_file` test needs no model: it reads the tokenizer.json transformers saved.

use kiln_runtime::tokenizer::{ChatMessage, ChatTemplate, Tokenizer, TokenizerError};
use kiln_runtime::weights::gguf::GgufFile;
use serde_json::Value;
use std::path::{Path, PathBuf};

const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("runtime/ has a parent")
        .to_path_buf()
}

fn model_path() -> Option<PathBuf> {
    [
        workspace_root().join("tests/models").join(MODEL),
        Path::new("/work/models").join(MODEL),
    ]
    .into_iter()
    .find(|p| p.exists())
}

fn fixture() -> Value {
    let path = workspace_root().join("tests/fixtures/tokenizer_smollm2.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an id list")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

fn stream(t: &Tokenizer, ids: &[u32], skip_special: bool) -> String {
    let mut dec = t.decoder().skip_special(skip_special);
    let mut out = String::new();
    for &id in ids {
        if let Some(piece) = dec.push(id).expect("push") {
            out.push_str(&piece);
        }
    }
    if let Some(rest) = dec.finish().expect("finish") {
        out.push_str(&rest);
    }
    out
}

/// Every check over the corpus and the chat renderings; all mismatches, not just the first.
fn check(t: &Tokenizer, fx: &Value, check_chat: bool) -> Vec<String> {
    let mut failures = Vec::new();
    let cases = fx["cases"].as_array().expect("cases");
    assert!(cases.len() >= 200, "the corpus has {} strings", cases.len());
    for c in cases {
        let text = c["text"].as_str().expect("text");
        for (key, add_special) in [("ids", true), ("ids_no_special", false)] {
            let want = ids(&c[key]);
            match t.encode(text, add_special) {
                Ok(got) if got == want => {}
                Ok(got) => failures.push(format!(
                    "encode({text:?}, add_special={add_special}):\n  expected {want:?}\n  got      {got:?}"
                )),
                Err(e) => failures.push(format!("encode({text:?}): error {e}")),
            }
        }
        let want_ids = ids(&c["ids"]);
        for (key, skip) in [("decoded", false), ("decoded_skip_special", true)] {
            let want = c[key].as_str().expect("decoded text");
            match t.decode(&want_ids, skip) {
                Ok(got) if got == want => {}
                Ok(got) => failures.push(format!(
                    "decode of {text:?} (skip_special={skip}):\n  expected {want:?}\n  got      {got:?}"
                )),
                Err(e) => failures.push(format!("decode of {text:?}: error {e}")),
            }
            let streamed = stream(t, &want_ids, skip);
            if let Ok(whole) = t.decode(&want_ids, skip) {
                if streamed != whole {
                    failures.push(format!(
                        "stream of {text:?} (skip_special={skip}):\n  decode   {whole:?}\n  streamed {streamed:?}"
                    ));
                }
            }
        }
    }
    if !check_chat {
        return failures;
    }
    let template = match t.chat_template() {
        Some(tpl) => tpl,
        None => {
            failures.push(format!(
                "no chat template ({:?})",
                t.chat_template_error().map(|e| e.to_string())
            ));
            return failures;
        }
    };
    let chats = fx["chat"].as_array().expect("chat");
    assert_eq!(chats.len(), 6);
    for c in chats {
        let messages = messages(&c["messages"]);
        let gen = c["add_generation_prompt"].as_bool().expect("flag");
        let want = c["rendered"].as_str().expect("rendered");
        match template.render(&messages, gen) {
            Ok(got) if got == want => {
                let want_ids = ids(&c["ids"]);
                match t.encode(&got, false) {
                    Ok(got_ids) if got_ids == want_ids => {}
                    other => failures.push(format!(
                        "chat ids of {want:?}:\n  expected {want_ids:?}\n  got      {other:?}"
                    )),
                }
            }
            Ok(got) => failures.push(format!(
                "chat rendering (add_generation_prompt={gen}):\n  expected {want:?}\n  got      {got:?}"
            )),
            Err(e) => failures.push(format!("chat rendering: error {e}")),
        }
    }
    failures
}

fn messages(v: &Value) -> Vec<ChatMessage> {
    v.as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            ChatMessage::new(
                m["role"].as_str().expect("role"),
                m["content"].as_str().expect("content"),
            )
        })
        .collect()
}

fn report(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} mismatches with the reference:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_gguf_matches_transformers_and_llama_cpp() {
    let Some(path) = model_path() else {
        println!("skipped: no SmolLM2 GGUF");
        return;
    };
    let file = GgufFile::open(&path).expect("open the GGUF");
    let t = Tokenizer::from_gguf(&file).expect("tokenizer from the GGUF");
    let fx = fixture();
    assert_eq!(t.vocab_size(), fx["vocab_size"].as_u64().unwrap() as usize);
    assert_eq!(t.bos(), Some(1));
    assert!(!t.adds_bos(), "SmolLM2 says add_bos_token = false");
    assert_eq!(t.eos_ids()[0], 2, "<|im_end|> is SmolLM2's EOS");
    assert!(
        t.is_eos(2) && t.is_eos(0),
        "<|im_end|> and <|endoftext|> end a generation"
    );
    assert_eq!(t.token(1).as_deref(), Some("<|im_start|>"));
    report(&check(&t, &fx, true));
}

#[test]
fn smollm2_tokenizer_json_matches_the_same_reference() {
    let dir = workspace_root().join("tests/fixtures/smollm2_tokenizer");
    let t = Tokenizer::from_file(
        &dir.join("tokenizer.json"),
        Some(&dir.join("tokenizer_config.json")),
    )
    .expect("tokenizer from tokenizer.json");
    assert_eq!(t.bos(), Some(1));
    assert!(!t.adds_bos());
    assert_eq!(t.eos_ids()[0], 2);
    report(&check(&t, &fixture(), true));
}

#[test]
fn missing_files_are_errors_not_panics() {
    let err = Tokenizer::from_file(Path::new("/nonexistent/tokenizer.json"), None).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/tokenizer.json"),
        "{err}"
    );
    let dir = std::env::temp_dir().join(format!("kiln-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("tokenizer.json");
    std::fs::write(&bad, "{\"not\": \"a tokenizer\"}").unwrap();
    let err = Tokenizer::from_file(&bad, None).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Templates in the style of Llama 3, Mistral and Qwen (whitespace control, trim/lstrip blocks,
/// namespace, slicing, filters, Python string methods, tojson, raise_exception) against Jinja2
/// as transformers runs it.
#[test]
fn template_engine_matches_jinja2_as_transformers_runs_it() {
    let fx = fixture();
    let mut failures = Vec::new();
    let templates = fx["extra_templates"].as_array().expect("extra_templates");
    assert!(templates.len() >= 3);
    for tpl in templates {
        let name = tpl["name"].as_str().expect("name");
        let template = ChatTemplate::new(
            tpl["source"].as_str().expect("source"),
            tpl["bos_token"].as_str().expect("bos"),
            tpl["eos_token"].as_str().expect("eos"),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        for r in tpl["renderings"].as_array().expect("renderings") {
            let msgs = messages(&r["messages"]);
            let gen = r["add_generation_prompt"].as_bool().expect("flag");
            let got = template.render(&msgs, gen);
            match (&r["rendered"], &r["error"], got) {
                (Value::String(want), _, Ok(got)) if *want == got => {}
                (_, Value::String(want), Err(TokenizerError::TemplateException { message }))
                    if *want == message => {}
                (want, want_err, got) => failures.push(format!(
                    "{name}, {} messages, add_generation_prompt={gen}:\n  expected {want} / error {want_err}\n  got      {got:?}",
                    msgs.len()
                )),
            }
        }
    }
    report(&failures);
}
