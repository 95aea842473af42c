//! Tokenizers built from in-memory GGUF metadata, and from the tiny SentencePiece GGUF in
//! `testdata/` (made by scripts/tokenizer_reference.py) against transformers' ids.

use super::*;
use crate::tokenizer::StreamDecoder;

fn byte_token(b: u8) -> String {
    format!("<0x{b:02X}>")
}

/// A small SentencePiece-style vocabulary: `<unk> <s> </s>`, the 256 byte tokens, then pieces
/// with scores (higher merges first).
fn spm_vocab(add_space_prefix: Option<bool>) -> GgufVocab {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    let mut scores = vec![0.0, 0.0, 0.0];
    for b in 0..=255u8 {
        tokens.push(byte_token(b));
        types.push(6);
        scores.push(0.0);
    }
    let pieces = [
        ("▁", -1.0),
        ("h", -2.0),
        ("e", -2.0),
        ("l", -2.0),
        ("o", -2.0),
        ("w", -2.0),
        ("r", -2.0),
        ("d", -2.0),
        ("ll", -3.0),
        ("▁h", -4.0),
        ("▁he", -5.0),
        ("llo", -6.0),
        ("▁hello", -7.0),
        ("▁w", -8.0),
        ("or", -9.0),
        ("▁wor", -10.0),
        ("ld", -11.0),
        ("▁world", -12.0),
        ("▁▁", -13.0),
    ];
    for (p, s) in pieces {
        tokens.push(p.into());
        types.push(1);
        scores.push(s);
    }
    GgufVocab {
        model: "llama".into(),
        tokens,
        scores: Some(scores),
        token_types: Some(types),
        bos: Some(1),
        eos: Some(2),
        unk: Some(0),
        add_space_prefix,
        ..GgufVocab::default()
    }
}

fn id(t: &Tokenizer, token: &str) -> u32 {
    t.token_id(token)
        .unwrap_or_else(|| panic!("`{token}` not in vocab"))
}

fn stream_all(t: &Tokenizer, ids: &[u32], skip_special: bool) -> (Vec<String>, String) {
    let mut dec: StreamDecoder = t.decoder().skip_special(skip_special);
    let mut pieces = Vec::new();
    for &i in ids {
        if let Some(p) = dec.push(i).unwrap() {
            pieces.push(p);
        }
    }
    if let Some(p) = dec.finish().unwrap() {
        pieces.push(p);
    }
    let joined = pieces.concat();
    (pieces, joined)
}

#[test]
fn tokenizers_are_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Tokenizer>();
    send_sync::<crate::tokenizer::ChatTemplate>();
}

#[test]
fn sentencepiece_space_prefix_merges_and_bos() {
    let t = spm_vocab(None).build().unwrap();
    assert_eq!(t.bos(), Some(1));
    assert!(t.adds_bos(), "llama vocabularies add BOS by default");
    assert_eq!(t.eos_ids(), &[2]);
    let hello = id(&t, "▁hello");
    let world = id(&t, "▁world");
    assert_eq!(
        t.encode("hello world", true).unwrap(),
        vec![1, hello, world]
    );
    assert_eq!(t.encode("hello world", false).unwrap(), vec![hello, world]);
    // A leading space is a `▁` of its own before the prefixed word, as SentencePiece does.
    assert_eq!(t.encode(" hello", false).unwrap(), vec![id(&t, "▁"), hello]);
    assert_eq!(
        t.encode("  hello", false).unwrap(),
        vec![id(&t, "▁▁"), hello]
    );
    // After a special token the text is prefixed again (llama.cpp, Llama 2's tokenizer.json).
    assert_eq!(t.encode("<s>hello", false).unwrap(), vec![1, hello]);
    assert_eq!(
        t.decode(&[1, hello, world], false).unwrap(),
        "<s> hello world"
    );
    assert_eq!(t.decode(&[1, hello, world], true).unwrap(), "hello world");
    assert_eq!(t.decode(&[hello, world], false).unwrap(), "hello world");
    assert_eq!(t.encode("", true).unwrap(), vec![1]);
}

#[test]
fn sentencepiece_byte_fallback_round_trips() {
    let t = spm_vocab(Some(true)).build().unwrap();
    // "é" is no piece: its UTF-8 bytes come as byte tokens; "中" too (3 bytes).
    let ids = t.encode("hello é中", false).unwrap();
    let expect = vec![
        id(&t, "▁hello"),
        id(&t, "▁"),
        id(&t, &byte_token(0xC3)),
        id(&t, &byte_token(0xA9)),
        id(&t, &byte_token(0xE4)),
        id(&t, &byte_token(0xB8)),
        id(&t, &byte_token(0xAD)),
    ];
    assert_eq!(ids, expect);
    assert_eq!(t.decode(&ids, false).unwrap(), "hello é中");
    // A character cut off at the end decodes to U+FFFD.
    assert_eq!(t.decode(&ids[..3], false).unwrap(), "hello \u{fffd}");
}

#[test]
fn sentencepiece_without_space_prefix() {
    let t = spm_vocab(Some(false)).build().unwrap();
    let ids = t.encode("hello world", false).unwrap();
    assert_eq!(ids[0], id(&t, "h"), "no ▁ before the first word: {ids:?}");
    assert!(ids.contains(&id(&t, "▁world")));
    assert_eq!(t.decode(&ids, false).unwrap(), "hello world");
    assert_eq!(t.decode(&[id(&t, "▁world")], false).unwrap(), " world");
}

#[test]
fn stream_decoder_holds_a_character_split_across_byte_tokens() {
    let t = spm_vocab(None).build().unwrap();
    let hello = id(&t, "▁hello");
    let (c3, a9) = (id(&t, &byte_token(0xC3)), id(&t, &byte_token(0xA9)));
    let (e4, b8, ad) = (
        id(&t, &byte_token(0xE4)),
        id(&t, &byte_token(0xB8)),
        id(&t, &byte_token(0xAD)),
    );
    let mut dec = t.decoder();
    assert_eq!(dec.push(hello).unwrap().as_deref(), Some("hello"));
    assert_eq!(dec.push(id(&t, "▁")).unwrap().as_deref(), Some(" "));
    assert_eq!(dec.push(c3).unwrap(), None, "half of é");
    assert_eq!(dec.push(a9).unwrap().as_deref(), Some("é"));
    assert_eq!(dec.push(e4).unwrap(), None);
    assert_eq!(dec.push(b8).unwrap(), None);
    assert_eq!(dec.push(ad).unwrap().as_deref(), Some("中"));
    assert_eq!(
        dec.push(id(&t, "▁world")).unwrap().as_deref(),
        Some(" world")
    );
    assert_eq!(dec.finish().unwrap(), None);

    // An incomplete character at the end comes out of finish() as U+FFFD, as decode() has it.
    let ids = [hello, e4, b8];
    let (pieces, joined) = stream_all(&t, &ids, false);
    assert_eq!(
        pieces,
        vec!["hello".to_string(), "\u{fffd}\u{fffd}".to_string()]
    );
    assert_eq!(joined, t.decode(&ids, false).unwrap());
}

/// GPT-2's byte alphabet spelling of `text`.
fn spell(text: &str) -> String {
    let s = byte_spelling();
    text.bytes().map(|b| s[b as usize]).collect()
}

/// A byte-level vocabulary: the 256 byte characters, a few merges and a control token.
fn byte_level_vocab() -> GgufVocab {
    let mut tokens: Vec<String> = vec![
        "<|endoftext|>".into(),
        "<|im_start|>".into(),
        "<|im_end|>".into(),
    ];
    let mut types = vec![3, 3, 3];
    for c in byte_spelling() {
        tokens.push(c.to_string());
        types.push(1);
    }
    let merges = [
        ("h", "e"),
        ("l", "l"),
        ("he", "ll"),
        ("hell", "o"),
        ("Ġ", "w"),
    ];
    for (a, b) in merges {
        tokens.push(format!("{a}{b}"));
        types.push(1);
    }
    GgufVocab {
        model: "gpt2".into(),
        pre: Some("smollm".into()),
        tokens,
        token_types: Some(types),
        merges: Some(merges.iter().map(|(a, b)| format!("{a} {b}")).collect()),
        bos: Some(1),
        eos: Some(2),
        unk: Some(0),
        add_bos: Some(false),
        ..GgufVocab::default()
    }
}

#[test]
fn byte_level_merges_specials_and_digits() {
    let t = byte_level_vocab().build().unwrap();
    assert!(!t.adds_bos());
    // EOS first, then the tokens llama.cpp ends a generation on.
    assert_eq!(t.eos_ids(), &[2, 0]);
    assert!(t.is_eos(0) && t.is_eos(2) && !t.is_eos(1));
    let ids = t.encode("<|im_start|>hello w12", true).unwrap();
    let expect = vec![1, id(&t, "hello"), id(&t, "Ġw"), id(&t, "1"), id(&t, "2")];
    assert_eq!(ids, expect);
    assert_eq!(t.decode(&ids, false).unwrap(), "<|im_start|>hello w12");
    assert_eq!(t.decode(&ids, true).unwrap(), "hello w12");
    assert_eq!(t.token(id(&t, "Ġw")).as_deref(), Some("Ġw"));
    assert!(t.token(100_000).is_none());
    assert!(matches!(
        t.decode(&[100_000], false),
        Err(TokenizerError::UnknownId { id: 100_000, .. })
    ));
}

#[test]
fn stream_decoder_holds_a_character_split_across_byte_level_tokens() {
    let t = byte_level_vocab().build().unwrap();
    let text = "hé😀!";
    let ids = t.encode(text, false).unwrap();
    // One token per byte past "h": é is 2 bytes, 😀 is 4.
    assert_eq!(ids.len(), 1 + 2 + 4 + 1);
    let mut dec = t.decoder();
    let got: Vec<Option<String>> = ids.iter().map(|&i| dec.push(i).unwrap()).collect();
    let want: Vec<Option<String>> = [
        Some("h"),
        None,
        Some("é"),
        None,
        None,
        None,
        Some("😀"),
        Some("!"),
    ]
    .iter()
    .map(|s| s.map(str::to_string))
    .collect();
    assert_eq!(got, want);
    let (_, joined) = stream_all(&t, &ids, false);
    assert_eq!(joined, text);
    let special = t.encode("<|im_start|>hé<|im_end|>", false).unwrap();
    assert_eq!(stream_all(&t, &special, true).1, "hé");
    assert_eq!(
        stream_all(&t, &special, false).1,
        "<|im_start|>hé<|im_end|>"
    );
}

#[test]
fn byte_level_respells_tokens_outside_the_alphabet() {
    let mut v = byte_level_vocab();
    // A token written with a real space and newline, as some converters do.
    v.tokens.push("a b\n".into());
    v.token_types.as_mut().unwrap().push(1);
    let t = v.build().unwrap();
    assert!(t.token_id(&spell("a b\n")).is_some());
}

#[test]
fn bad_metadata_is_an_error_naming_it() {
    let mut v = byte_level_vocab();
    v.token_types.as_mut().unwrap().truncate(10);
    let err = v.build().unwrap_err().to_string();
    assert!(err.contains("tokenizer.ggml.token_type"), "{err}");

    let mut v = byte_level_vocab();
    v.bos = Some(1_000_000);
    let err = v.build().unwrap_err().to_string();
    assert!(
        err.contains("tokenizer.ggml.bos_token_id") && err.contains("1000000"),
        "{err}"
    );

    let mut v = byte_level_vocab();
    v.model = "rwkv".into();
    assert!(matches!(v.build(), Err(TokenizerError::UnsupportedModel(m)) if m == "rwkv"));

    let mut v = byte_level_vocab();
    v.merges.as_mut().unwrap().insert(2, "nospace".into());
    match v.build() {
        Err(TokenizerError::BadMerge { index, line, .. }) => {
            assert_eq!((index, line.as_str()), (2, "nospace"))
        }
        other => panic!("expected a bad merge, got {other:?}"),
    }
    let mut v = byte_level_vocab();
    v.merges.as_mut().unwrap().push("x y".into());
    let err = v.build().unwrap_err().to_string();
    assert!(err.contains("index 5") && err.contains("`xy`"), "{err}");

    let mut v = byte_level_vocab();
    v.merges = None;
    assert!(
        matches!(v.build(), Err(TokenizerError::MissingKey(k)) if k == "tokenizer.ggml.merges")
    );

    let mut v = spm_vocab(None);
    v.scores.as_mut().unwrap().pop();
    let err = v.build().unwrap_err().to_string();
    assert!(err.contains("tokenizer.ggml.scores"), "{err}");

    let v = GgufVocab {
        model: "gpt2".into(),
        ..GgufVocab::default()
    };
    assert!(v.build().unwrap_err().to_string().contains("empty"));
}

#[test]
fn a_bad_chat_template_is_reported_not_fatal() {
    let mut v = byte_level_vocab();
    v.chat_template = Some("{% for %}".into());
    let t = v.build().unwrap();
    assert!(t.chat_template().is_none());
    assert!(matches!(
        t.chat_template_error(),
        Some(TokenizerError::TemplateSyntax { .. })
    ));
}

#[test]
fn merges_from_scores_follow_transformers_order() {
    let tokens: Vec<String> = ["a", "b", "ab", "ba", "aba", "abab"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let scores = [0.0, 0.0, -1.0, -0.5, -2.0, -3.0];
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let merges = merges_from_scores(&tokens, &scores, &vocab);
    let got: Vec<(&str, &str)> = merges
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    // transformers.tokenization_utils_base.generate_merges with these scores.
    assert_eq!(
        got,
        vec![
            ("b", "a"),
            ("a", "b"),
            ("ab", "a"),
            ("a", "ba"),
            ("aba", "b"),
            ("ab", "ab"),
        ]
    );
}

#[derive(Debug)]
struct Case {
    text: String,
    ids: Vec<u32>,
    ids_no_special: Vec<u32>,
    decoded: String,
    decoded_skip_special: String,
}

fn cases(json: &serde_json::Value) -> Vec<Case> {
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().unwrap().to_string(),
            ids: ids(&c["ids"]),
            ids_no_special: ids(&c["ids_no_special"]),
            decoded: c["decoded"].as_str().unwrap().to_string(),
            decoded_skip_special: c["decoded_skip_special"].as_str().unwrap().to_string(),
        })
        .collect()
}

/// The tiny SentencePiece GGUF against transformers (with Llama 2's Prepend/Replace space
/// handling; llama.cpp agrees on every string, see the script).
#[test]
fn tiny_sentencepiece_gguf_matches_reference() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/tokenizer/testdata");
    let file = GgufFile::open(&dir.join("tiny_spm.gguf")).unwrap();
    let t = Tokenizer::from_gguf(&file).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tiny_spm.json")).unwrap()).unwrap();
    let cases = cases(&json);
    assert!(cases.len() > 200);
    assert_eq!(
        t.vocab_size(),
        json["vocab_size"].as_u64().unwrap() as usize
    );
    let mut failures = Vec::new();
    for c in &cases {
        let got = t.encode(&c.text, true).unwrap();
        if got != c.ids {
            failures.push(format!("{:?}: ids {:?}, expected {:?}", c.text, got, c.ids));
        }
        let got = t.encode(&c.text, false).unwrap();
        if got != c.ids_no_special {
            failures.push(format!(
                "{:?}: ids without specials {:?}, expected {:?}",
                c.text, got, c.ids_no_special
            ));
        }
        let got = t.decode(&c.ids, false).unwrap();
        if got != c.decoded {
            failures.push(format!(
                "{:?}: decoded {:?}, expected {:?}",
                c.text, got, c.decoded
            ));
        }
        let got = t.decode(&c.ids, true).unwrap();
        if got != c.decoded_skip_special {
            failures.push(format!(
                "{:?}: decoded (skip special) {:?}, expected {:?}",
                c.text, got, c.decoded_skip_special
            ));
        }
        for skip in [false, true] {
            let (_, joined) = stream_all(&t, &c.ids, skip);
            let whole = t.decode(&c.ids, skip).unwrap();
            if joined != whole {
                failures.push(format!(
                    "{:?}: streamed {:?}, decode {:?} (skip special {skip})",
                    c.text, joined, whole
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
