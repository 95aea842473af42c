//! [`Session`]: text generation with a compiled model and its tokenizer — prompt
//! processing, sampling, stop conditions and streaming — the API an application embeds.

use super::{CausalLm, LmError};
use crate::sampling::{Sampler, SamplingError, SamplingOptions, StopStrings};
use crate::tokenizer::{Tokenizer, TokenizerError};
use std::time::{Duration, Instant};

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The model failed to run.
    #[error(transparent)]
    Model(#[from] LmError),
    /// Tokenizing or detokenizing failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The sampling options are invalid, or the logits are.
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    /// Nothing to run.
    #[error("the prompt is empty (no tokens)")]
    EmptyPrompt,
}

/// What [`Session::generate`] does.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Most new tokens.
    pub max_tokens: usize,
    /// How tokens are picked.
    pub sampling: SamplingOptions,
    /// Keep going past end-of-generation tokens.
    pub ignore_eos: bool,
    /// Stop when the text contains one of these (it is not emitted).
    pub stop: Vec<String>,
}

impl Default for GenerateOptions {
    fn default() -> GenerateOptions {
        GenerateOptions {
            max_tokens: 256,
            sampling: SamplingOptions::default(),
            ignore_eos: false,
            stop: Vec::new(),
        }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// An end-of-generation token.
    Eos,
    /// A stop string.
    StopString,
    /// `max_tokens` reached.
    MaxTokens,
    /// The context (KV cache) is full.
    ContextFull,
    /// The callback asked to stop.
    Cancelled,
}

/// The result of [`Session::generate`].
#[derive(Clone, Debug)]
pub struct Generation {
    /// Generated token ids (the end-of-generation token excluded).
    pub tokens: Vec<u32>,
    /// Generated text (up to a stop string).
    pub text: String,
    /// Prompt tokens run (those not already cached).
    pub prompt_tokens: usize,
    /// Prompt tokens found in the cache from the previous call and reused.
    pub reused_tokens: usize,
    /// Time to run the prompt (first logits).
    pub prompt_time: Duration,
    /// Time of the decode steps.
    pub decode_time: Duration,
    /// Why it stopped.
    pub stop: StopReason,
}

impl Generation {
    /// Prompt processing speed, tokens/s.
    pub fn prompt_tok_per_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_time.as_secs_f64().max(1e-9)
    }

    /// Generation speed, tokens/s (decode steps only).
    pub fn decode_tok_per_s(&self) -> f64 {
        let steps = self.tokens.len().saturating_sub(1).max(1);
        steps as f64 / self.decode_time.as_secs_f64().max(1e-9)
    }
}

/// A model and its tokenizer, with the token sequence now in the KV cache.
pub struct Session {
    /// The compiled model.
    pub lm: CausalLm,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// Tokens whose keys and values are in the cache, in order.
    cached: Vec<u32>,
}

impl Session {
    /// A session with an empty cache.
    pub fn new(lm: CausalLm, tokenizer: Tokenizer) -> Session {
        Session {
            lm,
            tokenizer,
            cached: Vec::new(),
        }
    }

    /// Forgets the cache.
    pub fn reset(&mut self) {
        self.lm.reset();
        self.cached.clear();
    }

    /// Tokens in the cache.
    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }

    /// Runs `tokens` after the cache's contents, reusing the longest cached prefix (a chat
    /// re-sends its whole history; only the new part runs). Returns the last logits and
    /// how many tokens were reused.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<(Vec<f32>, usize), SessionError> {
        if tokens.is_empty() {
            return Err(SessionError::EmptyPrompt);
        }
        let common = self
            .cached
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count()
            .min(tokens.len() - 1);
        self.lm.truncate(common);
        self.cached.truncate(common);
        let logits = match self.lm.forward(&tokens[common..]) {
            Ok(l) => l,
            Err(e) => {
                self.reset();
                return Err(e.into());
            }
        };
        self.cached.extend_from_slice(&tokens[common..]);
        Ok((logits, common))
    }

    /// Generates from `prompt` (token ids, e.g. from [`Tokenizer::encode`] or a chat
    /// template), calling `on_text` with each piece of text as soon as it is complete;
    /// `on_text` returns false to stop.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        options: &GenerateOptions,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation, SessionError> {
        let mut sampler = Sampler::new(options.sampling.clone())?;
        let start = Instant::now();
        let (mut logits, reused) = self.prefill(prompt)?;
        let prompt_time = start.elapsed();
        let mut stops = StopStrings::new(options.stop.clone());
        let mut decoder = self.tokenizer.decoder();
        let mut history = prompt.to_vec();
        let mut tokens = Vec::new();
        let mut text = String::new();
        let mut stop = StopReason::MaxTokens;
        let decode_start = Instant::now();
        let mut emit = |piece: &str, text: &mut String| {
            text.push_str(piece);
            piece.is_empty() || on_text(piece)
        };
        while tokens.len() < options.max_tokens {
            let next = sampler.sample(&logits, &history)?;
            if !options.ignore_eos && self.tokenizer.is_eos(next) {
                stop = StopReason::Eos;
                break;
            }
            tokens.push(next);
            history.push(next);
            if let Some(piece) = decoder.push(next)? {
                let step = stops.push(&piece);
                if !emit(&step.emit, &mut text) {
                    stop = StopReason::Cancelled;
                    break;
                }
                if step.stopped {
                    stop = StopReason::StopString;
                    break;
                }
            }
            if tokens.len() == options.max_tokens {
                break;
            }
            if self.lm.past() >= self.lm.capacity() {
                stop = StopReason::ContextFull;
                break;
            }
            logits = self.lm.forward(&[next])?;
            self.cached.push(next);
        }
        if stop != StopReason::StopString && stop != StopReason::Cancelled {
            let rest = stops.finish();
            emit(&rest, &mut text);
        }
        Ok(Generation {
            tokens,
            text,
            prompt_tokens: prompt.len() - reused,
            reused_tokens: reused,
            prompt_time,
            decode_time: decode_start.elapsed(),
            stop,
        })
    }
}
