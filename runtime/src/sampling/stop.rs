//! Stop strings for streamed generation: cuts the text at the first stop string, emitting
//! text as soon as it cannot be the start of one.

/// What a [`StopStrings::push`] lets through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StopStep {
    /// Text that is safe to show now: it is not part of a stop string and cannot become one.
    pub emit: String,
    /// A stop string was hit: generation should stop. `emit` holds the text before it; the
    /// stop string and everything after it are dropped.
    pub stopped: bool,
}

/// Matches stop strings in streamed text, as llama.cpp's server and HF's `stop_strings` do
/// for generation. Fed the text pieces as they are decoded, it emits what can no longer be
/// part of a stop string and holds back the end of the text while it is the start of one.
///
/// The stop is the first stop string to be completed (the earliest end in the text; of those,
/// the one that starts first), so the output does not depend on how the text is split into
/// pieces. Pieces are `&str` and cuts fall on char boundaries: a multi-byte char is never
/// split. Empty stop strings are ignored.
#[derive(Clone, Debug, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    /// Text received but not emitted: a suffix that is a proper prefix of a stop string.
    held: String,
    stopped: bool,
}

impl StopStrings {
    /// A matcher for `stops` (empty strings are dropped; none at all passes text through).
    pub fn new<I, S>(stops: I) -> StopStrings
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        StopStrings {
            stops: stops
                .into_iter()
                .map(Into::into)
                .filter(|s| !s.is_empty())
                .collect(),
            held: String::new(),
            stopped: false,
        }
    }

    /// Feeds the next decoded piece. Once stopped, every further piece is dropped and
    /// `stopped` stays true until [`finish`](Self::finish).
    pub fn push(&mut self, piece: &str) -> StopStep {
        if self.stopped {
            return StopStep {
                emit: String::new(),
                stopped: true,
            };
        }
        self.held.push_str(piece);
        if let Some(start) = self.first_stop() {
            self.held.truncate(start);
            self.stopped = true;
            return StopStep {
                emit: std::mem::take(&mut self.held),
                stopped: true,
            };
        }
        let cut = self.held.len() - self.longest_partial();
        let emit = self.held[..cut].to_owned();
        self.held.drain(..cut);
        StopStep {
            emit,
            stopped: false,
        }
    }

    /// Ends the stream: returns the held-back text (empty if a stop string was hit) and
    /// resets the matcher for a new stream with the same stop strings.
    pub fn finish(&mut self) -> String {
        let rest = std::mem::take(&mut self.held);
        let stopped = std::mem::replace(&mut self.stopped, false);
        if stopped {
            String::new()
        } else {
            rest
        }
    }

    /// Whether a stop string was hit in this stream.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Start of the first completed stop string in the held text: earliest end, then
    /// earliest start. Emitted text never holds the start of one, so the held text is enough.
    fn first_stop(&self) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()).map(|at| (at + s.len(), at)))
            .min()
            .map(|(_, start)| start)
    }

    /// Length in bytes of the longest suffix of the held text that is a proper prefix of a
    /// stop string. It starts on a char boundary: a prefix of a `str` starts with a char.
    fn longest_partial(&self) -> usize {
        self.stops
            .iter()
            .filter_map(|s| {
                (1..s.len().min(self.held.len() + 1))
                    .rev()
                    .find(|&n| s.is_char_boundary(n) && self.held.ends_with(&s[..n]))
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Everything `pieces` let through, and whether they stopped.
    fn stream(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopStrings::new(stops.iter().copied());
        let mut out = String::new();
        let mut stopped = false;
        for piece in pieces {
            let step = m.push(piece);
            out += &step.emit;
            stopped = step.stopped;
        }
        out += &m.finish();
        (out, stopped)
    }

    #[test]
    fn a_stop_string_split_across_pieces_is_caught() {
        let mut m = StopStrings::new(["</s>"]);
        let step = m.push("Hello <");
        assert_eq!((step.emit.as_str(), step.stopped), ("Hello ", false));
        let step = m.push("/");
        assert_eq!((step.emit.as_str(), step.stopped), ("", false));
        let step = m.push("s> and more");
        assert_eq!((step.emit.as_str(), step.stopped), ("", true));
        assert!(m.is_stopped());
        assert_eq!(
            m.push("later"),
            StopStep {
                emit: String::new(),
                stopped: true
            }
        );
        assert_eq!(m.finish(), "");
        assert!(!m.is_stopped());
    }

    #[test]
    fn text_before_the_stop_in_the_same_piece_is_emitted() {
        assert_eq!(
            stream(&["STOP"], &["abc", "deSTOPfg"]),
            ("abcde".into(), true)
        );
        assert_eq!(stream(&["STOP"], &["STOP"]), (String::new(), true));
    }

    #[test]
    fn a_false_start_is_released() {
        let mut m = StopStrings::new(["###"]);
        assert_eq!(m.push("a#").emit, "a");
        assert_eq!(m.push("#").emit, "");
        assert_eq!(m.push("b").emit, "##b");
        assert_eq!(m.push("##").emit, "");
        // The partial prefix comes out at the end.
        assert_eq!(m.finish(), "##");
    }

    #[test]
    fn with_several_stop_strings_the_first_completed_wins() {
        // "b" completes before "abc" could.
        assert_eq!(stream(&["abc", "b"], &["xa", "bc"]), ("xa".into(), true));
        assert_eq!(stream(&["abc", "b"], &["xabc"]), ("xa".into(), true));
        // Same end: the longer one, so less is emitted.
        assert_eq!(stream(&["bc", "abc"], &["xa", "bc"]), ("x".into(), true));
        // The held-back text covers the longest partial prefix of any stop string.
        let mut m = StopStrings::new(["xyz", "yz!"]);
        assert_eq!(m.push("axy").emit, "a");
        assert_eq!(m.push("z?").emit, "");
        assert!(m.is_stopped());
    }

    #[test]
    fn multi_byte_chars_are_never_split() {
        // The stop string shares its first two bytes with "é" (C3 A9): "è" is C3 A8.
        let mut m = StopStrings::new(["èè"]);
        assert_eq!(m.push("aé").emit, "aé");
        assert_eq!(m.push("è").emit, "");
        assert_eq!(m.push("é").emit, "èé");
        assert_eq!(m.push("😀è").emit, "😀");
        assert_eq!(m.finish(), "è");
        assert_eq!(
            stream(&["終わり"], &["日本", "語終", "わり。"]),
            ("日本語".into(), true)
        );
        assert_eq!(stream(&["🛑"], &["ok 🛑 no"]), ("ok ".into(), true));
    }

    #[test]
    fn no_stop_strings_pass_everything_through() {
        let mut m = StopStrings::new(["", ""]);
        assert_eq!(m.push("abc").emit, "abc");
        assert_eq!(m.finish(), "");
        let mut m = StopStrings::default();
        assert_eq!(m.push("x").emit, "x");
    }

    /// The expected output: the text up to the first completed stop string.
    fn reference(text: &str, stops: &[String]) -> (String, bool) {
        let first = stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s.as_str()).map(|at| (at + s.len(), at)))
            .min();
        match first {
            Some((_, start)) => (text[..start].to_owned(), true),
            None => (text.to_owned(), false),
        }
    }

    fn text(max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!['a', 'b', 'é', '€', '😀']), 0..max)
            .prop_map(|c| c.into_iter().collect())
    }

    proptest! {
        #[test]
        fn any_split_gives_the_reference_output(
            text in text(40),
            stops in prop::collection::vec(text(4), 0..4),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let chars: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
            let mut at: Vec<usize> = cuts.iter().map(|c| chars.get(c.index(chars.len().max(1))).copied().unwrap_or(0)).collect();
            at.push(0);
            at.push(text.len());
            at.sort_unstable();
            let pieces: Vec<&str> = at.windows(2).map(|w| &text[w[0]..w[1]]).collect();

            let mut m = StopStrings::new(stops.iter().cloned());
            let mut out = String::new();
            let mut stopped = false;
            for piece in &pieces {
                let step = m.push(piece);
                out += &step.emit;
                stopped |= step.stopped;
                // What is held back is exactly the longest end that could start a stop.
                if !stopped {
                    let received = &text[..out.len() + m.held.len()];
                    prop_assert!(received.starts_with(&out));
                    let longest = stops
                        .iter()
                        .flat_map(|s| s.char_indices().skip(1).map(move |(i, _)| &s[..i]))
                        .filter(|p| received.ends_with(p))
                        .map(str::len)
                        .max()
                        .unwrap_or(0);
                    prop_assert_eq!(m.held.len(), longest);
                }
            }
            out += &m.finish();
            prop_assert_eq!((out, stopped), reference(&text, &stops));
        }
    }
}
