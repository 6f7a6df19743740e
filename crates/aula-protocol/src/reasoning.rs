//! Reasoning apart from the answer, for models whose chat template thinks in
//! `<think>…</think>` (Qwen3, DeepSeek-R1 and their distillations): what is
//! inside goes to `reasoning_content`, the rest to `content`, as vLLM and
//! llama.cpp's server return it — whole, or as a stream of deltas.
//!
//! Rules:
//! - Only a block at the start of the answer is reasoning (after leading
//!   whitespace); `<think>` later in the text is text.
//! - A template that opens the block itself (the prompt ends with
//!   `<think>`) starts the answer inside it.
//! - An answer cut off inside the block (`max_tokens`) is all reasoning.
//! - While streaming, text that may be the start of `<think>` or `</think>`
//!   is held back until it is known; nothing else is delayed.
//!
//! gpt-oss writes OpenAI's harmony format instead ([`HarmonySplitter`]):
//! messages `<|channel|>NAME<|message|>BODY` ended by `<|end|>`, `<|call|>`,
//! `<|return|>` or the next `<|start|>`. The `analysis` channel is
//! reasoning; `final` and `commentary` bodies are content; headers and
//! markers never reach the client. Text that does not start with a marker is
//! content as it is.

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Reasoning,
    Content,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Reasoning,
    Content,
}

/// Splits streamed text into reasoning and content deltas.
#[derive(Debug)]
pub struct ThinkSplitter {
    state: State,
    held: String,
    /// After a block: the whitespace that separates it from the answer is
    /// dropped until the answer's first character.
    trim: bool,
}

impl ThinkSplitter {
    /// `opened`: the prompt already opened the block.
    pub fn new(opened: bool) -> ThinkSplitter {
        ThinkSplitter {
            state: if opened {
                State::Reasoning
            } else {
                State::Start
            },
            held: String::new(),
            trim: false,
        }
    }

    /// The deltas this text makes sendable now, in order.
    pub fn push(&mut self, text: &str) -> Vec<(Part, String)> {
        self.held.push_str(text);
        let mut out = Vec::new();
        loop {
            match self.state {
                State::Start => {
                    let t = self.held.trim_start();
                    if let Some(rest) = t.strip_prefix(OPEN) {
                        self.held = rest.to_string();
                        self.state = State::Reasoning;
                    } else if OPEN.starts_with(t) {
                        return out; // empty, or a prefix of `<think>`: wait
                    } else {
                        self.state = State::Content;
                    }
                }
                State::Reasoning => {
                    if let Some(end) = self.held.find(CLOSE) {
                        let r = self.held[..end].to_string();
                        let rest = self.held[end + CLOSE.len()..].trim_start().to_string();
                        if !r.is_empty() {
                            out.push((Part::Reasoning, r));
                        }
                        self.held = rest;
                        self.state = State::Content;
                        self.trim = true;
                        continue;
                    }
                    let keep = partial_suffix(&self.held, CLOSE);
                    let send = self.held.len() - keep;
                    if send > 0 {
                        out.push((Part::Reasoning, self.held[..send].to_string()));
                        self.held.drain(..send);
                    }
                    return out;
                }
                State::Content => {
                    if self.trim {
                        self.held = self.held.trim_start().to_string();
                        if self.held.is_empty() {
                            return out;
                        }
                        self.trim = false;
                    }
                    if !self.held.is_empty() {
                        out.push((Part::Content, std::mem::take(&mut self.held)));
                    }
                    return out;
                }
            }
        }
    }

    /// The end of the answer: whatever is still held.
    pub fn finish(&mut self) -> Vec<(Part, String)> {
        let held = std::mem::take(&mut self.held);
        if held.is_empty() {
            return Vec::new();
        }
        let part = match self.state {
            State::Reasoning => Part::Reasoning,
            _ => Part::Content,
        };
        vec![(part, held)]
    }
}

const H_MESSAGE: &str = "<|message|>";
const H_ENDS: [&str; 4] = ["<|end|>", "<|call|>", "<|return|>", "<|start|>"];

/// Splits a harmony answer (its markers rendered as text) into reasoning
/// and content deltas.
#[derive(Debug, Default)]
pub struct HarmonySplitter {
    held: String,
    /// The part of the message being read; None while in a header.
    part: Option<Part>,
    /// Text without harmony's markers: passed through as content.
    plain: bool,
    /// A message body has been read (later text is never `plain`).
    seen: bool,
}

impl HarmonySplitter {
    pub fn new() -> HarmonySplitter {
        HarmonySplitter::default()
    }

    /// The deltas this text makes sendable now, in order.
    pub fn push(&mut self, text: &str) -> Vec<(Part, String)> {
        self.held.push_str(text);
        let mut out = Vec::new();
        loop {
            if self.plain {
                if !self.held.is_empty() {
                    out.push((Part::Content, std::mem::take(&mut self.held)));
                }
                return out;
            }
            match self.part {
                None => {
                    if let Some(i) = self.held.find(H_MESSAGE) {
                        let header = &self.held[..i];
                        self.part = Some(if header.contains("analysis") {
                            Part::Reasoning
                        } else {
                            Part::Content
                        });
                        self.held.drain(..i + H_MESSAGE.len());
                        continue;
                    }
                    let t = self.held.trim_start();
                    if !t.is_empty() && !t.starts_with('<') && out.is_empty() && self.is_first() {
                        self.plain = true;
                        continue;
                    }
                    return out;
                }
                Some(part) => {
                    let end = H_ENDS
                        .iter()
                        .filter_map(|m| self.held.find(m).map(|i| (i, m.len())))
                        .min();
                    if let Some((i, len)) = end {
                        if i > 0 {
                            out.push((part, self.held[..i].to_string()));
                        }
                        self.held.drain(..i + len);
                        self.part = None;
                        self.seen = true;
                        continue;
                    }
                    // Hold back what may be the start of a marker.
                    let keep = H_ENDS
                        .iter()
                        .map(|m| partial_suffix(&self.held, m))
                        .max()
                        .unwrap_or(0);
                    let send = self.held.len() - keep;
                    if send > 0 {
                        out.push((part, self.held[..send].to_string()));
                        self.held.drain(..send);
                    }
                    self.seen = true;
                    return out;
                }
            }
        }
    }

    /// The end of the answer: a body still open is sent; a header cut off
    /// before its body is dropped.
    pub fn finish(&mut self) -> Vec<(Part, String)> {
        let held = std::mem::take(&mut self.held);
        match self.part {
            _ if held.is_empty() => Vec::new(),
            Some(part) => vec![(part, held)],
            None if self.plain || !held.contains("<|") => vec![(Part::Content, held)],
            None => Vec::new(),
        }
    }

    fn is_first(&self) -> bool {
        !self.seen
    }
}

/// A whole harmony answer: (reasoning, content).
pub fn split_harmony(text: &str) -> (Option<String>, String) {
    let mut s = HarmonySplitter::new();
    let mut parts = s.push(text);
    parts.extend(s.finish());
    join(parts)
}

/// Reasoning and content deltas joined: (reasoning, content).
pub fn join(parts: Vec<(Part, String)>) -> (Option<String>, String) {
    let mut reasoning = String::new();
    let mut content = String::new();
    for (p, t) in parts {
        match p {
            Part::Reasoning => reasoning.push_str(&t),
            Part::Content => content.push_str(&t),
        }
    }
    let reasoning = reasoning.trim();
    (
        (!reasoning.is_empty()).then(|| reasoning.to_string()),
        content,
    )
}

/// The length of the longest suffix of `text` that is a proper prefix of `tag`.
fn partial_suffix(text: &str, tag: &str) -> usize {
    (1..tag.len())
        .rev()
        .find(|&n| {
            text.len() >= n
                && text.is_char_boundary(text.len() - n)
                && tag.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

/// A whole answer: (reasoning, content).
pub fn split(text: &str, opened: bool) -> (Option<String>, String) {
    let mut s = ThinkSplitter::new(opened);
    let mut parts = s.push(text);
    parts.extend(s.finish());
    join(parts)
}

/// The splitter a template calls for.
#[derive(Debug)]
pub enum Splitter {
    Think(ThinkSplitter),
    Harmony(HarmonySplitter),
}

impl Splitter {
    pub fn push(&mut self, text: &str) -> Vec<(Part, String)> {
        match self {
            Splitter::Think(s) => s.push(text),
            Splitter::Harmony(s) => s.push(text),
        }
    }

    pub fn finish(&mut self) -> Vec<(Part, String)> {
        match self {
            Splitter::Think(s) => s.finish(),
            Splitter::Harmony(s) => s.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(pieces: &[&str], opened: bool) -> Vec<(Part, String)> {
        let mut s = ThinkSplitter::new(opened);
        let mut out: Vec<(Part, String)> = Vec::new();
        for p in pieces {
            out.extend(s.push(p));
        }
        out.extend(s.finish());
        // Join neighbours of the same part, as a client concatenates deltas.
        let mut joined: Vec<(Part, String)> = Vec::new();
        for (p, t) in out {
            match joined.last_mut() {
                Some((q, u)) if *q == p => u.push_str(&t),
                _ => joined.push((p, t)),
            }
        }
        joined
    }

    #[test]
    fn a_leading_block_is_reasoning_however_it_is_cut_into_tokens() {
        let text = "<think>\nThe user greets me.\n</think>\n\nHello! How can I help?";
        let whole = split(text, false);
        assert_eq!(whole.0.as_deref(), Some("The user greets me."));
        assert_eq!(whole.1, "Hello! How can I help?");
        // Every way of cutting the text into two pieces streams the same.
        for i in 1..text.len() {
            let parts = stream(&[&text[..i], &text[i..]], false);
            assert_eq!(parts.len(), 2, "cut at {i}: {parts:?}");
            assert_eq!(parts[0].0, Part::Reasoning);
            assert_eq!(parts[0].1.trim(), "The user greets me.");
            assert_eq!(parts[1], (Part::Content, "Hello! How can I help?".into()));
        }
        // One character at a time.
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let pieces: Vec<&str> = chars.iter().map(String::as_str).collect();
        let parts = stream(&pieces, false);
        assert_eq!(parts[1], (Part::Content, "Hello! How can I help?".into()));
    }

    #[test]
    fn text_without_a_leading_block_is_content() {
        assert_eq!(
            split("Hello <think>not reasoning</think>", false),
            (None, "Hello <think>not reasoning</think>".into())
        );
        assert_eq!(split("<thin", false), (None, "<thin".into()));
        assert_eq!(
            stream(&["<", "b>bold</b>"], false),
            vec![(Part::Content, "<b>bold</b>".into())]
        );
    }

    #[test]
    fn harmony_channels_split_however_the_text_is_cut() {
        // openai/harmony's test-data shape: analysis, then final.
        let text = "<|channel|>analysis<|message|>User asks a sum. 2+2=4.<|end|><|start|>assistant<|channel|>final<|message|>It is 4.";
        assert_eq!(
            split_harmony(text),
            (Some("User asks a sum. 2+2=4.".into()), "It is 4.".into())
        );
        for i in 1..text.len() {
            let mut s = HarmonySplitter::new();
            let mut parts = s.push(&text[..i]);
            parts.extend(s.push(&text[i..]));
            parts.extend(s.finish());
            assert_eq!(
                join(parts),
                (Some("User asks a sum. 2+2=4.".into()), "It is 4.".into()),
                "cut at {i}"
            );
        }
        // Plain text passes through as it streams; a cut-off header is dropped.
        let mut s = HarmonySplitter::new();
        assert_eq!(s.push("Hello"), vec![(Part::Content, "Hello".into())]);
        assert_eq!(
            split_harmony("<|channel|>analysis<|message|>thinking<|end|><|start|>assistant<|chan"),
            (Some("thinking".into()), String::new())
        );
        // A commentary preamble is content; `<|return|>` ends the message.
        assert_eq!(
            split_harmony(
                "<|channel|>commentary<|message|>Checking.<|end|><|start|>assistant<|channel|>final<|message|>Done.<|return|>"
            ),
            (None, "Checking.Done.".into())
        );
    }

    #[test]
    fn an_opened_block_and_a_cut_off_one() {
        // DeepSeek-R1's template ends the prompt with `<think>\n`.
        assert_eq!(
            split("Let me see.\n</think>\n\n42", true),
            (Some("Let me see.".into()), "42".into())
        );
        // Cut off by max_tokens inside the block: all reasoning, no content.
        assert_eq!(
            split("<think>still thinking, about </thi", false),
            (Some("still thinking, about </thi".into()), String::new())
        );
        assert_eq!(
            split("<think></think>Answer", false),
            (None, "Answer".into())
        );
    }
}
