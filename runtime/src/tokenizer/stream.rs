//! Incremental detokenization for streaming output.
//!
//! A token is not a unit of text: a byte-level token may hold half of a UTF-8 character, a
//! SentencePiece byte-fallback token one byte of it, and a leading `▁` turns into a space only
//! once there is text before it. So each step decodes a short window of recent ids twice, with
//! and without the new ids, and hands out only the text the new ids added, once it does not end
//! in an incomplete character (U+FFFD). Concatenating everything handed out, [`finish`]
//! included, gives `decode` of the whole sequence.
//!
//! [`finish`]: StreamDecoder::finish

use super::{Tokenizer, TokenizerError};

/// Turns ids into text one at a time: see [`Tokenizer::decoder`].
#[derive(Debug)]
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    skip_special: bool,
    /// Ids of the window: `ids[..read]` were handed out, `ids[read..]` are held back.
    ids: Vec<u32>,
    /// How many ids at the start of the window are context only (handed out before `read`).
    read: usize,
}

impl<'a> StreamDecoder<'a> {
    pub(crate) fn new(tokenizer: &'a Tokenizer) -> StreamDecoder<'a> {
        StreamDecoder {
            tokenizer,
            skip_special: false,
            ids: Vec::new(),
            read: 0,
        }
    }

    /// Leaves special tokens out of the text (as `decode(ids, true)`).
    pub fn skip_special(mut self, skip: bool) -> StreamDecoder<'a> {
        self.skip_special = skip;
        self
    }

    /// Adds `id`; returns the text it completes, if any. `None` while a character is still
    /// incomplete (or the token adds no text, as a skipped special token).
    pub fn push(&mut self, id: u32) -> Result<Option<String>, TokenizerError> {
        self.ids.push(id);
        let before = self.text(..self.read)?;
        let after = self.text(..)?;
        if after.len() <= before.len() || after.ends_with('\u{fffd}') || !after.starts_with(&before)
        {
            return Ok(None);
        }
        let piece = after[before.len()..].to_string();
        // The ids just handed out are the next step's context.
        self.ids.drain(..self.read);
        self.read = self.ids.len();
        Ok(Some(piece))
    }

    /// The text still held back (an incomplete character comes out as U+FFFD), if any.
    /// Call it once the sequence ends.
    pub fn finish(self) -> Result<Option<String>, TokenizerError> {
        let before = self.text(..self.read)?;
        let after = self.text(..)?;
        // The part of `after` past what `before` already handed out.
        let common = before
            .char_indices()
            .zip(after.chars())
            .find(|&((_, b), a)| a != b)
            .map(|((i, _), _)| i)
            .unwrap_or(before.len().min(after.len()));
        let rest = &after[common..];
        Ok((!rest.is_empty()).then(|| rest.to_string()))
    }

    fn text(
        &self,
        range: impl std::slice::SliceIndex<[u32], Output = [u32]>,
    ) -> Result<String, TokenizerError> {
        self.tokenizer.decode(&self.ids[range], self.skip_special)
    }
}
