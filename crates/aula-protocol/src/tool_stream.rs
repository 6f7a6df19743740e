//! Streaming an answer that was offered tools, the way OpenAI streams it:
//! text as `content` deltas, each call as a first delta with its `index`,
//! `id`, `type` and `name` (arguments `""`), then argument fragments.
//!
//! Rules:
//! - A **forced** call (`tool_choice` `required` or named: decoding is
//!   constrained to `{"name": ..., "arguments": {...}}`, possibly inside the
//!   template's `<tool_call>` tags) is streamed as it is generated: the name
//!   once it is complete, then the arguments object piece by piece, up to
//!   its closing brace ([`ForcedCall`]).
//! - With `auto`, text is streamed as content until the first character that
//!   could open a call or a reasoning block (`<`, `{`, `[`, or a code
//!   fence's backtick), leading whitespace left out; from there on
//!   the answer is held, and when it is over the whole answer is parsed once
//!   ([`crate::tool_parse`]): the rest of its content, its calls (a header
//!   delta and one arguments delta each). So a streamed answer carries the
//!   same calls and text as the same answer not streamed.

/// A piece of a forced call, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallPiece {
    /// The function's name: the call's first delta.
    Start(String),
    /// More of the arguments' JSON text.
    Args(String),
}

#[derive(Debug)]
enum Phase {
    /// Before the arguments: looking for the name and the arguments' key.
    Head,
    /// Inside the arguments object.
    Args {
        depth: u32,
        in_str: bool,
        escaped: bool,
    },
    /// After the arguments' closing brace: the rest is the format's tail.
    Done,
}

/// Reads a forced call as it is generated.
#[derive(Debug)]
pub struct ForcedCall {
    buf: String,
    /// Where the arguments (or what is left to scan of them) start in `buf`.
    at: usize,
    args_key: &'static str,
    phase: Phase,
}

impl ForcedCall {
    /// `args_key`: `arguments`, or `parameters` for Llama 3's format.
    pub fn new(args_key: &'static str) -> Self {
        ForcedCall {
            buf: String::new(),
            at: 0,
            args_key,
            phase: Phase::Head,
        }
    }

    /// Whether the arguments' object has closed.
    pub fn done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// Feed generated text; get what can be sent now.
    pub fn push(&mut self, text: &str) -> Vec<CallPiece> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        if let Phase::Head = self.phase {
            let Some(name) = self.name() else {
                return out;
            };
            let key = format!("\"{}\":", self.args_key);
            let Some(k) = self.buf.find(&key) else {
                return out;
            };
            // The object starts at the first `{` after the key.
            let Some(open) = self.buf[k + key.len()..].find('{') else {
                return out;
            };
            out.push(CallPiece::Start(name));
            self.at = k + key.len() + open;
            self.phase = Phase::Args {
                depth: 0,
                in_str: false,
                escaped: false,
            };
        }
        if let Phase::Args {
            mut depth,
            mut in_str,
            mut escaped,
        } = self.phase
        {
            let start = self.at;
            let mut end = self.buf.len();
            let mut closed = false;
            for (i, c) in self.buf[start..].char_indices() {
                if in_str {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        in_str = false;
                    }
                    continue;
                }
                match c {
                    '"' => in_str = true,
                    '{' | '[' => depth += 1,
                    '}' | ']' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            end = start + i + 1;
                            closed = true;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            if end > start {
                out.push(CallPiece::Args(self.buf[start..end].to_string()));
            }
            self.at = end;
            self.phase = if closed {
                Phase::Done
            } else {
                Phase::Args {
                    depth,
                    in_str,
                    escaped,
                }
            };
        }
        out
    }

    /// The name, once its string has closed.
    fn name(&self) -> Option<String> {
        let k = self.buf.find("\"name\":")?;
        let rest = self.buf[k + 7..].trim_start();
        let body = rest.strip_prefix('"')?;
        // Tool names are `[A-Za-z0-9_-]`: no escapes to read.
        let close = body.find('"')?;
        Some(body[..close].to_string())
    }
}

/// Where text streamed live with `auto` tools must stop: the first
/// character that could open a call or a reasoning block.
pub fn hold_from(text: &str) -> Option<usize> {
    text.find(['<', '{', '[', '`'])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn feed(f: &mut ForcedCall, text: &str, step: usize) -> Vec<CallPiece> {
        let chars: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        for part in chars.chunks(step) {
            out.extend(f.push(&part.iter().collect::<String>()));
        }
        out
    }

    fn joined(pieces: &[CallPiece]) -> (Vec<String>, String) {
        let mut names = Vec::new();
        let mut args = String::new();
        for p in pieces {
            match p {
                CallPiece::Start(n) => names.push(n.clone()),
                CallPiece::Args(a) => args.push_str(a),
            }
        }
        (names, args)
    }

    #[test]
    fn a_forced_call_streams_its_name_then_its_arguments_in_any_split() {
        let text = "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo {x}\", \"n\": [1, {\"a\": \"}\"}]}}";
        for step in [1, 2, 3, 7, 200] {
            let mut f = ForcedCall::new("arguments");
            let pieces = feed(&mut f, text, step);
            let (names, args) = joined(&pieces);
            assert_eq!(names, ["get_weather"], "step {step}");
            assert_eq!(
                args, "{\"city\": \"Oslo {x}\", \"n\": [1, {\"a\": \"}\"}]}",
                "step {step}"
            );
            assert!(f.done());
            assert!(matches!(pieces[0], CallPiece::Start(_)));
        }
    }

    #[test]
    fn wrapped_and_llama_calls() {
        let mut f = ForcedCall::new("arguments");
        let p = feed(
            &mut f,
            "<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}\n</tool_call>",
            4,
        );
        assert_eq!(
            joined(&p),
            (vec!["add".to_string()], "{\"a\": 1, \"b\": 2}".to_string())
        );
        let mut f = ForcedCall::new("parameters");
        let p = feed(
            &mut f,
            "{\"name\": \"add\", \"parameters\": {\"s\": \"a\\\"}b\"}}",
            1,
        );
        assert_eq!(joined(&p).1, "{\"s\": \"a\\\"}b\"}");
    }

    #[test]
    fn nothing_is_sent_before_the_name_is_whole() {
        let mut f = ForcedCall::new("arguments");
        assert!(f.push("{\"name\": \"get_wea").is_empty());
        assert!(f.push("ther\", \"argu").is_empty());
        assert_eq!(
            f.push("ments\": {"),
            vec![
                CallPiece::Start("get_weather".into()),
                CallPiece::Args("{".into())
            ]
        );
        assert!(!f.done());
    }

    #[test]
    fn held_text_starts_at_a_possible_marker() {
        assert_eq!(hold_from("It is sunny."), None);
        assert_eq!(hold_from("Sure. <tool_call>"), Some(6));
        assert_eq!(hold_from("{\"name\""), Some(0));
        assert_eq!(hold_from("[TOOL_CALLS]"), Some(0));
        assert_eq!(hold_from("```json"), Some(0));
    }
}
