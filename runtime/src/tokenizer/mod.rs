//! Tokenizers for LLMs: text to token ids and back, built from a GGUF file's metadata
//! ([`Tokenizer::from_gguf`]) or a Hugging Face `tokenizer.json` ([`Tokenizer::from_file`]), with
//! streaming detokenization ([`StreamDecoder`]) and chat templates ([`ChatTemplate`]).
//!
//! The tokenization itself is Hugging Face's `tokenizers` crate (pure Rust: its `fancy-regex`
//! backend); this module builds the same tokenizer that transformers and llama.cpp build for a
//! GGUF file (see [`Tokenizer::from_gguf`] for the kinds it knows) and adds what a
//! generation loop needs: the BOS/EOS policy of the model, every end-of-generation id, and
//! text that only ever comes out in whole UTF-8 characters.

mod chat;
mod gguf;
mod stream;

pub use chat::{ChatMessage, ChatTemplate};
pub use stream::StreamDecoder;

use crate::weights::gguf::GgufFile;
use crate::weights::WeightError;
use std::path::{Path, PathBuf};

/// Why a tokenizer could not be built, or could not encode, decode or render.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A metadata value could not be read (wrong type), from the GGUF reader.
    #[error(transparent)]
    Gguf(#[from] WeightError),
    /// A metadata key the tokenizer needs is absent.
    #[error("tokenizer metadata `{0}` is missing")]
    MissingKey(String),
    /// A metadata value is present but unusable: what is wrong with it.
    #[error("tokenizer metadata `{key}`: {what}")]
    BadMetadata {
        /// The key.
        key: String,
        /// What is wrong.
        what: String,
    },
    /// A `tokenizer.ggml.model` this module cannot build.
    #[error("unsupported tokenizer model `{0}` (supported: `gpt2` byte-level BPE, `llama` SentencePiece BPE)")]
    UnsupportedModel(String),
    /// A merge rule that is not two tokens of the vocabulary.
    #[error("tokenizer merge at index {index} (`{line}`): {what}")]
    BadMerge {
        /// Its index in the merges list.
        index: usize,
        /// The merge as written.
        line: String,
        /// What is wrong.
        what: String,
    },
    /// The `tokenizers` library refused the vocabulary, a file, or an input.
    #[error("{context}: {message}")]
    Library {
        /// What was being done.
        context: &'static str,
        /// What the library said.
        message: String,
    },
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A JSON file is not what was expected.
    #[error("{path}: {what}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A token id that is not in the vocabulary was given to decode.
    #[error("token id {id} is not in the vocabulary ({vocab_size} tokens)")]
    UnknownId {
        /// The id.
        id: u32,
        /// How many tokens the vocabulary has.
        vocab_size: usize,
    },
    /// A chat template that does not compile.
    #[error("chat template syntax error{}: {message}", line_suffix(*.line))]
    TemplateSyntax {
        /// 1-based line of the template, where known.
        line: Option<usize>,
        /// What the template engine said.
        message: String,
    },
    /// A chat template that failed while rendering.
    #[error("chat template error{}: {message}", line_suffix(*.line))]
    TemplateRender {
        /// 1-based line of the template, where known.
        line: Option<usize>,
        /// What the template engine said.
        message: String,
    },
    /// The chat template called `raise_exception(message)`: the conversation is not one the
    /// template accepts (e.g. roles that do not alternate).
    #[error("chat template raised: {message}")]
    TemplateException {
        /// The template's message.
        message: String,
    },
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|l| format!(" at line {l}")).unwrap_or_default()
}

impl TokenizerError {
    fn library(context: &'static str, err: impl std::fmt::Display) -> TokenizerError {
        TokenizerError::Library {
            context,
            message: err.to_string(),
        }
    }
}

/// Token texts that end a generation wherever they are in the vocabulary, as llama.cpp's list
/// (`<|im_end|>` of ChatML, `<|eot_id|>` of Llama 3, `<end_of_turn>` of Gemma, ...).
const END_OF_GENERATION_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

/// A tokenizer: text to ids and back, the model's special ids and its chat template.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
    eos: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    /// `encode` adds BOS/EOS itself (GGUF, or a `tokenizer_config.json` that says); otherwise
    /// the `tokenizer.json`'s post-processor does.
    manual_special: bool,
    chat_template: Option<ChatTemplate>,
    chat_template_error: Option<TokenizerError>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .field("chat_template", &self.chat_template.is_some())
            .finish()
    }
}

impl Tokenizer {
    /// The tokenizer a GGUF file describes in its `tokenizer.*` metadata.
    ///
    /// `tokenizer.ggml.model` `"gpt2"` is byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM2), split
    /// as `tokenizer.ggml.pre` says; `"llama"` is SentencePiece BPE with byte fallback (Llama 2,
    /// Mistral, TinyLlama). Control tokens (type 3) become special tokens, matched whole in text;
    /// user-defined ones (type 4) are matched whole too. A chat template that does not compile
    /// does not fail the tokenizer: see [`Tokenizer::chat_template_error`].
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        gguf::GgufVocab::read(file)?.build()
    }

    /// A Hugging Face `tokenizer.json`, with its `tokenizer_config.json` for the BOS/EOS tokens,
    /// `add_bos_token`/`add_eos_token` and the chat template (or a `chat_template.jinja` beside
    /// it).
    ///
    /// Without `add_bos_token`/`add_eos_token` in the config, the `tokenizer.json`'s own
    /// post-processor decides what `encode(text, true)` adds.
    pub fn from_file(
        tokenizer_json: &Path,
        tokenizer_config_json: Option<&Path>,
    ) -> Result<Tokenizer, TokenizerError> {
        let text = read_text(tokenizer_json)?;
        let mut inner = tokenizers::Tokenizer::from_bytes(text.as_bytes()).map_err(|e| {
            TokenizerError::Json {
                path: tokenizer_json.to_path_buf(),
                what: format!("not a tokenizer.json the tokenizers library can load: {e}"),
            }
        })?;
        // Ids of the text alone: no padding or truncation a tokenizer.json may carry.
        inner
            .with_truncation(None)
            .map_err(|e| TokenizerError::library("turning truncation off", e))?;
        inner.with_padding(None);
        let config = match tokenizer_config_json {
            Some(path) => Some(TokenizerConfig::read(path)?),
            None => None,
        };
        let config = config.unwrap_or_default();

        let id_of = |key: &str, token: &Option<String>| -> Result<Option<u32>, TokenizerError> {
            match token {
                None => Ok(None),
                Some(t) => {
                    inner
                        .token_to_id(t)
                        .map(Some)
                        .ok_or_else(|| TokenizerError::BadMetadata {
                            key: key.to_string(),
                            what: format!("`{t}` is not in the vocabulary"),
                        })
                }
            }
        };
        let bos = id_of("bos_token", &config.bos_token)?;
        let eos_main = id_of("eos_token", &config.eos_token)?;
        let mut eos: Vec<u32> = eos_main.into_iter().collect();
        for text in END_OF_GENERATION_TEXTS {
            if let Some(id) = inner.token_to_id(text) {
                if !eos.contains(&id) {
                    eos.push(id);
                }
            }
        }

        let manual_special = config.add_bos_token.is_some() || config.add_eos_token.is_some();
        let (add_bos, add_eos) = if manual_special {
            inner.with_post_processor(None::<tokenizers::PostProcessorWrapper>);
            (
                config.add_bos_token.unwrap_or(false) && bos.is_some(),
                config.add_eos_token.unwrap_or(false) && eos_main.is_some(),
            )
        } else {
            // What the post-processor adds around a one-token text.
            let probe = inner
                .encode("a", true)
                .map_err(|e| TokenizerError::library("encoding a probe text", e))?;
            let ids = probe.get_ids();
            (
                bos.is_some() && ids.first().copied() == bos,
                eos_main.is_some() && ids.len() > 1 && ids.last().copied() == eos_main,
            )
        };

        let bos_text = config.bos_token.clone().unwrap_or_default();
        let eos_text = config.eos_token.clone().unwrap_or_default();
        let (chat_template, chat_template_error) = match &config.chat_template {
            None => (None, None),
            Some(src) => match ChatTemplate::new(src, &bos_text, &eos_text) {
                Ok(t) => (Some(t), None),
                Err(e) => (None, Some(e)),
            },
        };
        Ok(Tokenizer {
            inner,
            bos,
            eos,
            add_bos,
            add_eos,
            manual_special,
            chat_template,
            chat_template_error,
        })
    }

    /// Token ids of `text`. Special and control tokens written in the text (`<|im_start|>`) are
    /// matched whole. With `add_special`, BOS (and EOS) are added only where the model asks for
    /// them (`add_bos_token`, as llama.cpp and transformers do).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .inner
            .encode(text, add_special && !self.manual_special)
            .map_err(|e| TokenizerError::library("encoding", e))?;
        let body = enc.get_ids();
        if !(add_special && self.manual_special) {
            return Ok(body.to_vec());
        }
        let mut ids = Vec::with_capacity(body.len() + 2);
        if let (true, Some(bos)) = (self.add_bos, self.bos) {
            ids.push(bos);
        }
        ids.extend_from_slice(body);
        if let (true, Some(&eos)) = (self.add_eos, self.eos.first()) {
            ids.push(eos);
        }
        Ok(ids)
    }

    /// The text of `ids`; with `skip_special`, special tokens are left out. Bytes that are not
    /// valid UTF-8 (a character cut off at the end) come out as U+FFFD. An id that is not in the
    /// vocabulary is an error.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        if let Some(&id) = ids.iter().find(|&&id| self.inner.id_to_token(id).is_none()) {
            return Err(TokenizerError::UnknownId {
                id,
                vocab_size: self.vocab_size(),
            });
        }
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| TokenizerError::library("decoding", e))
    }

    /// An incremental decoder for streaming output, keeping special tokens' text (see
    /// [`StreamDecoder::skip_special`]).
    pub fn decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self)
    }

    /// Number of tokens, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The beginning-of-sequence id, if the model has one.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// Every id that ends a generation: the model's EOS first, then end-of-turn tokens such as
    /// `<|im_end|>` or `<|eot_id|>` found in the metadata or the vocabulary (as llama.cpp).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos
    }

    /// Whether `id` ends a generation.
    pub fn is_eos(&self, id: u32) -> bool {
        self.eos.contains(&id)
    }

    /// Whether `encode(text, true)` adds BOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether `encode(text, true)` adds EOS.
    pub fn adds_eos(&self) -> bool {
        self.add_eos
    }

    /// The vocabulary's spelling of token `id` (byte-level tokens in GPT-2's byte alphabet,
    /// `Ġhello`; SentencePiece tokens with `▁`), or `None` if there is no such id.
    pub fn token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of the token spelled `token` in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The model's chat template, if it has one that compiles.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// Why the model's chat template could not be used, if it has one that does not compile.
    pub fn chat_template_error(&self) -> Option<&TokenizerError> {
        self.chat_template_error.as_ref()
    }
}

fn read_text(path: &Path) -> Result<String, TokenizerError> {
    std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// What `from_file` reads from `tokenizer_config.json`.
#[derive(Default)]
struct TokenizerConfig {
    bos_token: Option<String>,
    eos_token: Option<String>,
    add_bos_token: Option<bool>,
    add_eos_token: Option<bool>,
    chat_template: Option<String>,
}

impl TokenizerConfig {
    fn read(path: &Path) -> Result<TokenizerConfig, TokenizerError> {
        let text = read_text(path)?;
        let bad = |what: String| TokenizerError::Json {
            path: path.to_path_buf(),
            what,
        };
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let obj = json
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        // A special token is a string, or an object with its `content`.
        let token = |key: &str| -> Result<Option<String>, TokenizerError> {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(v) => v
                    .get("content")
                    .and_then(|c| c.as_str())
                    .map(|s| Some(s.to_string()))
                    .ok_or_else(|| bad(format!("`{key}` is neither a string nor a token object"))),
            }
        };
        let flag = |key: &str| -> Result<Option<bool>, TokenizerError> {
            match obj.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => v
                    .as_bool()
                    .map(Some)
                    .ok_or_else(|| bad(format!("`{key}` is not a bool"))),
            }
        };
        // A template is a string, or a list of named ones of which "default" is used.
        let chat_template = match obj.get("chat_template") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .or(list.first())
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .map(str::to_string),
            Some(_) => return Err(bad("`chat_template` is neither a string nor a list".into())),
        };
        let chat_template = chat_template
            .or_else(|| std::fs::read_to_string(path.with_file_name("chat_template.jinja")).ok());
        Ok(TokenizerConfig {
            bos_token: token("bos_token")?,
            eos_token: token("eos_token")?,
            add_bos_token: flag("add_bos_token")?,
            add_eos_token: flag("add_eos_token")?,
            chat_template,
        })
    }
}
