//! Building a [`Tokenizer`] from a GGUF file's `tokenizer.*` metadata, as transformers' GGUF
//! loader and llama.cpp do.
//!
//! * `gpt2`: byte-level BPE. Tokens are spelled in GPT-2's byte alphabet (a token that is not
//!   is re-spelled, as transformers does), merges come from `tokenizer.ggml.merges`, and the text
//!   is split as `tokenizer.ggml.pre` says: [`split_for`] has the table. Pre-tokenizers llama.cpp
//!   marks `ignore_merges` (the Llama 3 family) take a word that is a whole token whole.
//! * `llama`: SentencePiece BPE with byte fallback (`<0x0A>` tokens). Merges come from
//!   `tokenizer.ggml.merges` when present, else from the scores as transformers'
//!   `generate_merges` does. Spaces become `▁` and, with `add_space_prefix` (the default), a `▁`
//!   is put before the text and after each special token, as SentencePiece and llama.cpp do
//!   (Llama 2's own `tokenizer.json`: a `Prepend` + `Replace` normalizer). Decoding reverses it.
//!
//! Token types: 3 (control) become special tokens and 4 (user-defined) added tokens, both
//! matched whole in text and not normalized; the BOS/EOS/UNK/PAD tokens are special too.

use super::{ChatTemplate, Tokenizer, TokenizerError, END_OF_GENERATION_TEXTS};
use crate::weights::gguf::GgufFile;
use std::collections::HashMap;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
};

/// Token type of a control token (`<s>`, `<|im_start|>`).
const TYPE_CONTROL: i64 = 3;
/// Token type of a user-defined token (matched whole, not special).
const TYPE_USER_DEFINED: i64 = 4;

/// SentencePiece's word-boundary mark.
const SPACE_MARK: char = '\u{2581}';

/// The `tokenizer.*` metadata of a GGUF file: everything [`GgufVocab::build`] uses, so a
/// tokenizer can be built (and tested) without a file.
#[derive(Clone, Debug, Default)]
pub(crate) struct GgufVocab {
    /// `tokenizer.ggml.model`: `gpt2` or `llama`.
    pub model: String,
    /// `tokenizer.ggml.pre`: the split regex of a byte-level vocabulary.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores`.
    pub scores: Option<Vec<f64>>,
    /// `tokenizer.ggml.token_type`.
    pub token_types: Option<Vec<i64>>,
    /// `tokenizer.ggml.merges`, each `"left right"`.
    pub merges: Option<Vec<String>>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos: Option<usize>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos: Option<usize>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unk: Option<usize>,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad: Option<usize>,
    /// `tokenizer.ggml.eot_token_id`.
    pub eot: Option<usize>,
    /// `tokenizer.ggml.eom_token_id`.
    pub eom: Option<usize>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`.
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix`.
    pub add_space_prefix: Option<bool>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
}

impl GgufVocab {
    /// The tokenizer metadata of `file`.
    pub fn read(file: &GgufFile) -> Result<GgufVocab, TokenizerError> {
        let owned = |v: Option<Vec<&str>>| v.map(|v| v.into_iter().map(str::to_string).collect());
        let model = file
            .get_str("tokenizer.ggml.model")?
            .ok_or_else(|| TokenizerError::MissingKey("tokenizer.ggml.model".into()))?
            .to_string();
        let tokens = owned(file.get_str_array("tokenizer.ggml.tokens")?)
            .ok_or_else(|| TokenizerError::MissingKey("tokenizer.ggml.tokens".into()))?;
        Ok(GgufVocab {
            model,
            pre: file.get_str("tokenizer.ggml.pre")?.map(str::to_string),
            tokens,
            scores: file.get_f64_array("tokenizer.ggml.scores")?,
            token_types: file.get_i64_array("tokenizer.ggml.token_type")?,
            merges: owned(file.get_str_array("tokenizer.ggml.merges")?),
            bos: file.get_usize("tokenizer.ggml.bos_token_id")?,
            eos: file.get_usize("tokenizer.ggml.eos_token_id")?,
            unk: file.get_usize("tokenizer.ggml.unknown_token_id")?,
            pad: file.get_usize("tokenizer.ggml.padding_token_id")?,
            eot: file.get_usize("tokenizer.ggml.eot_token_id")?,
            eom: file.get_usize("tokenizer.ggml.eom_token_id")?,
            add_bos: file.get_bool("tokenizer.ggml.add_bos_token")?,
            add_eos: file.get_bool("tokenizer.ggml.add_eos_token")?,
            add_space_prefix: file.get_bool("tokenizer.ggml.add_space_prefix")?,
            chat_template: file.get_str("tokenizer.chat_template")?.map(str::to_string),
        })
    }

    /// Checks the metadata and builds the tokenizer.
    pub fn build(self) -> Result<Tokenizer, TokenizerError> {
        let n = self.tokens.len();
        if n == 0 {
            return Err(bad(
                "tokenizer.ggml.tokens",
                "the vocabulary is empty".into(),
            ));
        }
        if u32::try_from(n).is_err() {
            return Err(bad(
                "tokenizer.ggml.tokens",
                format!("{n} tokens is more than u32 ids"),
            ));
        }
        if let Some(types) = &self.token_types {
            if types.len() != n {
                return Err(bad(
                    "tokenizer.ggml.token_type",
                    format!("{} entries for {n} tokens", types.len()),
                ));
            }
        }
        if let Some(scores) = &self.scores {
            if scores.len() != n {
                return Err(bad(
                    "tokenizer.ggml.scores",
                    format!("{} entries for {n} tokens", scores.len()),
                ));
            }
        }
        let check_id = |key: &str, id: Option<usize>| -> Result<Option<u32>, TokenizerError> {
            match id {
                Some(id) if id >= n => Err(bad(
                    key,
                    format!("token id {id} is out of range (the vocabulary has {n} tokens)"),
                )),
                // Fits: n fits u32.
                Some(id) => Ok(Some(id as u32)),
                None => Ok(None),
            }
        };
        let bos = check_id("tokenizer.ggml.bos_token_id", self.bos)?;
        let eos = check_id("tokenizer.ggml.eos_token_id", self.eos)?;
        let unk = check_id("tokenizer.ggml.unknown_token_id", self.unk)?;
        let pad = check_id("tokenizer.ggml.padding_token_id", self.pad)?;
        let eot = check_id("tokenizer.ggml.eot_token_id", self.eot)?;
        let eom = check_id("tokenizer.ggml.eom_token_id", self.eom)?;

        let byte_level = match self.model.as_str() {
            "gpt2" => true,
            "llama" => false,
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };
        let split = split_for(self.pre.as_deref());
        let mut inner = if byte_level {
            self.byte_level(split)?
        } else {
            self.sentencepiece(unk)?
        };

        // Special tokens: the BOS/EOS/UNK/PAD tokens and every control token; user-defined
        // tokens as plain added tokens. All matched whole in the raw text.
        let types = self.token_types.as_deref().unwrap_or(&[]);
        let alphabet = byte_alphabet();
        let mut special: Vec<AddedToken> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut add_special = |text: &str, special: &mut Vec<AddedToken>| {
            if seen.insert(text.to_string()) {
                special.push(AddedToken::from(text.to_string(), true).normalized(false));
            }
        };
        for id in [bos, eos, unk, pad].into_iter().flatten() {
            add_special(&self.tokens[id as usize], &mut special);
        }
        for (token, &ty) in self.tokens.iter().zip(types) {
            // In a byte-level vocabulary a control token spelled outside the byte alphabet is a
            // converter's mislabel (transformers skips it too).
            if ty == TYPE_CONTROL && (!byte_level || token.chars().all(|c| alphabet.contains(&c))) {
                add_special(token, &mut special);
            }
        }
        inner
            .add_special_tokens(special)
            .map_err(|e| TokenizerError::library("adding special tokens", e))?;
        let user: Vec<AddedToken> = self
            .tokens
            .iter()
            .zip(types)
            .filter(|(token, &ty)| ty == TYPE_USER_DEFINED && inner.token_to_id(token).is_some())
            .map(|(token, _)| AddedToken::from(token.clone(), false).normalized(false))
            .collect();
        inner
            .add_tokens(user)
            .map_err(|e| TokenizerError::library("adding user-defined tokens", e))?;

        // End of generation: EOS, the end-of-turn ids, and the tokens llama.cpp knows by text.
        let mut eos_ids: Vec<u32> = [eos, eot, eom].into_iter().flatten().collect();
        eos_ids.dedup();
        for (id, token) in self.tokens.iter().enumerate() {
            if END_OF_GENERATION_TEXTS.contains(&token.as_str()) && !eos_ids.contains(&(id as u32))
            {
                eos_ids.push(id as u32);
            }
        }

        // llama.cpp's defaults where the file does not say: BOS for SentencePiece vocabularies
        // and the Llama 3 family.
        let add_bos = self
            .add_bos
            .unwrap_or(!byte_level || split == PreSplit::Llama3)
            && bos.is_some();
        let add_eos = self.add_eos.unwrap_or(false) && eos.is_some();

        let bos_text = bos
            .map(|id| self.tokens[id as usize].as_str())
            .unwrap_or("");
        let eos_text = eos
            .map(|id| self.tokens[id as usize].as_str())
            .unwrap_or("");
        let (chat_template, chat_template_error) = match &self.chat_template {
            None => (None, None),
            Some(src) => match ChatTemplate::new(src, bos_text, eos_text) {
                Ok(t) => (Some(t), None),
                Err(e) => (None, Some(e)),
            },
        };
        Ok(Tokenizer {
            inner,
            bos,
            eos: eos_ids,
            add_bos,
            add_eos,
            manual_special: true,
            chat_template,
            chat_template_error,
        })
    }

    /// Byte-level BPE (`gpt2`).
    fn byte_level(&self, split: PreSplit) -> Result<tokenizers::Tokenizer, TokenizerError> {
        let alphabet = byte_alphabet();
        let spelling = byte_spelling();
        let vocab: Vocab = self
            .tokens
            .iter()
            .enumerate()
            .map(|(id, token)| {
                let spelled = if token.chars().all(|c| alphabet.contains(&c)) {
                    token.clone()
                } else {
                    token.bytes().map(|b| spelling[b as usize]).collect()
                };
                (spelled, id as u32)
            })
            .collect();
        let merges = match &self.merges {
            Some(lines) => parse_merges(lines, &vocab)?,
            None => return Err(TokenizerError::MissingKey("tokenizer.ggml.merges".into())),
        };
        let model = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(split == PreSplit::Llama3)
            .build()
            .map_err(|e| TokenizerError::library("building the BPE model", e))?;
        let mut inner = tokenizers::Tokenizer::new(model);
        inner.with_pre_tokenizer(Some(split.pre_tokenizer()?));
        inner.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
        Ok(inner)
    }

    /// SentencePiece BPE with byte fallback (`llama`).
    fn sentencepiece(&self, unk: Option<u32>) -> Result<tokenizers::Tokenizer, TokenizerError> {
        let vocab: Vocab = self
            .tokens
            .iter()
            .enumerate()
            .map(|(id, token)| (token.clone(), id as u32))
            .collect();
        let merges = match (&self.merges, &self.scores) {
            (Some(lines), _) => parse_merges(lines, &vocab)?,
            (None, Some(scores)) => merges_from_scores(&self.tokens, scores, &vocab),
            (None, None) => {
                return Err(TokenizerError::MissingKey(
                    "tokenizer.ggml.scores (or tokenizer.ggml.merges)".into(),
                ))
            }
        };
        let mut builder = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .byte_fallback(true)
            .fuse_unk(true);
        if let Some(unk) = unk {
            builder = builder.unk_token(self.tokens[unk as usize].clone());
        }
        let model = builder
            .build()
            .map_err(|e| TokenizerError::library("building the BPE model", e))?;
        let prefix = self.add_space_prefix.unwrap_or(true);
        let mark = SPACE_MARK.to_string();
        let mut normalizers: Vec<NormalizerWrapper> = Vec::new();
        if prefix {
            normalizers.push(Prepend::new(mark.clone()).into());
        }
        normalizers.push(
            Replace::new(" ", mark.clone())
                .map_err(|e| TokenizerError::library("building the normalizer", e))?
                .into(),
        );
        let mut decoders: Vec<DecoderWrapper> = vec![
            DecoderWrapper::Replace(
                Replace::new(mark, " ")
                    .map_err(|e| TokenizerError::library("building the decoder", e))?,
            ),
            DecoderWrapper::ByteFallback(ByteFallback::new()),
            DecoderWrapper::Fuse(Fuse::new()),
        ];
        if prefix {
            decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
        }
        let mut inner = tokenizers::Tokenizer::new(model);
        inner
            .with_normalizer(Some(NormalizerSequence::new(normalizers)))
            .map_err(|e| TokenizerError::library("setting the normalizer", e))?;
        inner.with_decoder(Some(DecoderSequence::new(decoders)));
        Ok(inner)
    }
}

fn bad(key: &str, what: String) -> TokenizerError {
    TokenizerError::BadMetadata {
        key: key.to_string(),
        what,
    }
}

/// The merges list, checked: two tokens of the vocabulary separated by one space, whose
/// concatenation is a token too.
fn parse_merges(lines: &[String], vocab: &Vocab) -> Result<Vec<(String, String)>, TokenizerError> {
    lines
        .iter()
        .enumerate()
        .map(|(index, line)| {
            let err = |what: String| TokenizerError::BadMerge {
                index,
                line: line.clone(),
                what,
            };
            let (left, right) = line
                .split_once(' ')
                .ok_or_else(|| err("no space between the two tokens".into()))?;
            if left.is_empty() || right.is_empty() || right.contains(' ') {
                return Err(err("not two tokens separated by one space".into()));
            }
            for part in [left, right] {
                if !vocab.contains_key(part) {
                    return Err(err(format!("`{part}` is not in the vocabulary")));
                }
            }
            let merged = format!("{left}{right}");
            if !vocab.contains_key(&merged) {
                return Err(err(format!(
                    "the merged token `{merged}` is not in the vocabulary"
                )));
            }
            Ok((left.to_string(), right.to_string()))
        })
        .collect()
}

/// Merges implied by a SentencePiece vocabulary, as transformers' `generate_merges` (with
/// scores) derives them: every split of a token into two tokens, best score first, then longer
/// left part, then longer right part; ties in the order the tokens come.
fn merges_from_scores(tokens: &[String], scores: &[f64], vocab: &Vocab) -> Vec<(String, String)> {
    // Python's `dict(zip(tokens, scores))`: first position, last score of a repeated token.
    let mut order: Vec<(&str, f64)> = Vec::with_capacity(tokens.len());
    let mut position: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    for (token, &score) in tokens.iter().zip(scores) {
        match position.get(token.as_str()) {
            Some(&i) => order[i].1 = score,
            None => {
                position.insert(token, order.len());
                order.push((token, score));
            }
        }
    }
    struct Merge<'a> {
        left: &'a str,
        right: &'a str,
        score: f64,
        left_chars: usize,
        right_chars: usize,
    }
    let mut merges: Vec<Merge> = Vec::new();
    for &(token, score) in &order {
        let start = merges.len();
        let total = token.chars().count();
        for (n_left, (at, _)) in token.char_indices().enumerate().skip(1) {
            let (left, right) = token.split_at(at);
            if let (Some(_), Some(_)) = (vocab.get(left), vocab.get(right)) {
                merges.push(Merge {
                    left,
                    right,
                    score,
                    left_chars: n_left,
                    right_chars: total - n_left,
                });
            }
        }
        merges[start..].sort_by_key(|m| (vocab[m.left], vocab[m.right]));
    }
    // Stable, descending: Python's `sorted(..., reverse=True)` keeps ties in order.
    merges.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.left_chars.cmp(&a.left_chars))
            .then(b.right_chars.cmp(&a.right_chars))
    });
    merges
        .into_iter()
        .map(|m| (m.left.to_string(), m.right.to_string()))
        .collect()
}

/// How a byte-level vocabulary splits text before BPE, by `tokenizer.ggml.pre`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PreSplit {
    /// GPT-2's regex (transformers' default, and for unknown names).
    Gpt2,
    /// Every digit alone, then GPT-2's regex (SmolLM, StarCoder).
    DigitsGpt2,
    /// Llama 3's regex; whole-token words skip the merges.
    Llama3,
    /// Qwen2's regex.
    Qwen2,
    /// Qwen3.5's regex.
    Qwen35,
    /// Mistral's Tekken regex.
    Tekken,
    /// GPT-4o's regex (Llama 4).
    Gpt4o,
}

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O_SPLIT: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split for `tokenizer.ggml.pre`: transformers' table (`GGUF_PRE_TOKENIZER_SPLITS`), plus
/// the digit-splitting family llama.cpp knows (SmolLM, StarCoder, ...) that transformers lacks.
fn split_for(pre: Option<&str>) -> PreSplit {
    match pre.unwrap_or("default") {
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => {
            PreSplit::DigitsGpt2
        }
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" => PreSplit::Llama3,
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => PreSplit::Qwen2,
        "qwen35" => PreSplit::Qwen35,
        "tekken" => PreSplit::Tekken,
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => PreSplit::Gpt4o,
        _ => PreSplit::Gpt2,
    }
}

impl PreSplit {
    fn pre_tokenizer(self) -> Result<PreTokenizerWrapper, TokenizerError> {
        use tokenizers::pre_tokenizers::byte_level::ByteLevel as ByteLevelPre;
        let regex = |pattern: &str| -> Result<PreTokenizerWrapper, TokenizerError> {
            let split = Split::new(
                SplitPattern::Regex(pattern.to_string()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| TokenizerError::library("compiling the split regex", e))?;
            Ok(PreSequence::new(vec![
                split.into(),
                ByteLevelPre::new(false, true, false).into(),
            ])
            .into())
        };
        Ok(match self {
            PreSplit::Gpt2 => ByteLevelPre::new(false, true, true).into(),
            PreSplit::DigitsGpt2 => PreSequence::new(vec![
                Digits::new(true).into(),
                ByteLevelPre::new(false, true, true).into(),
            ])
            .into(),
            PreSplit::Llama3 => regex(LLAMA3_SPLIT)?,
            PreSplit::Qwen2 => regex(QWEN2_SPLIT)?,
            PreSplit::Qwen35 => regex(QWEN35_SPLIT)?,
            PreSplit::Tekken => regex(TEKKEN_SPLIT)?,
            PreSplit::Gpt4o => regex(GPT4O_SPLIT)?,
        })
    }
}

/// GPT-2's byte alphabet: the character that spells each byte.
fn byte_spelling() -> [char; 256] {
    let mut spelling = ['\0'; 256];
    let mut next = 256u32;
    for (b, slot) in spelling.iter_mut().enumerate() {
        let printable = (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
        let code = if printable {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        // Every code here is below 0x144: a valid char.
        *slot = char::from_u32(code).unwrap_or('\u{fffd}');
    }
    spelling
}

fn byte_alphabet() -> std::collections::HashSet<char> {
    byte_spelling().into_iter().collect()
}

#[cfg(test)]
mod tests;
