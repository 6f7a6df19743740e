//! A fine-tuning file, checked before anything is queued: JSON Lines, one
//! `{"messages": [...]}` conversation per line, roles `system`, `user` and
//! `assistant` with string contents, at least one non-empty assistant turn
//! in every example, and at least [`MIN_EXAMPLES`] examples. Every error
//! names the line. Token counts (the base model's tokenizer) are the
//! trainer's: it says how many tokens each job has and which examples it
//! had to cut at the context.

/// Fewest examples a training file may have (as OpenAI's).
pub const MIN_EXAMPLES: usize = 10;
/// Most examples one file may have.
pub const MAX_EXAMPLES: usize = 100_000;
/// Most characters one example may have.
const MAX_EXAMPLE_CHARS: usize = 200_000;

/// What a valid file holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub examples: usize,
    /// Characters of all assistant turns (what is trained on).
    pub assistant_chars: usize,
    /// Characters of all turns.
    pub chars: usize,
    /// Characters of the longest example.
    pub longest_chars: usize,
}

/// Check a training (or validation) file; the error names the line.
pub fn check(bytes: &[u8]) -> Result<Summary, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        format!("line {line}: the file is not UTF-8 text")
    })?;
    let mut sum = Summary {
        examples: 0,
        assistant_chars: 0,
        chars: 0,
        longest_chars: 0,
    };
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        if line.chars().count() > MAX_EXAMPLE_CHARS {
            return Err(format!(
                "line {n}: the example is longer than {MAX_EXAMPLE_CHARS} characters"
            ));
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("line {n}: not valid JSON ({e})"))?;
        let Some(obj) = v.as_object() else {
            return Err(format!(
                "line {n}: each line must be a JSON object with `messages`"
            ));
        };
        if let Some(k) = obj.keys().find(|k| k.as_str() != "messages") {
            return Err(format!(
                "line {n}: unknown key `{k}`; an example is {{\"messages\": [...]}}"
            ));
        }
        let Some(messages) = obj.get("messages").and_then(|m| m.as_array()) else {
            return Err(format!("line {n}: `messages` must be a list of messages"));
        };
        if messages.is_empty() {
            return Err(format!("line {n}: `messages` is empty"));
        }
        let mut answered = false;
        let before = sum.chars;
        for (i, m) in messages.iter().enumerate() {
            let at = format!("line {n}, message {}", i + 1);
            let Some(m) = m.as_object() else {
                return Err(format!("{at}: a message must be an object"));
            };
            if let Some(k) = m
                .keys()
                .find(|k| !matches!(k.as_str(), "role" | "content" | "name"))
            {
                return Err(format!(
                    "{at}: unknown key `{k}`; a message has `role` and `content`"
                ));
            }
            let role = m.get("role").and_then(|r| r.as_str()).unwrap_or("");
            if !matches!(role, "system" | "user" | "assistant") {
                return Err(format!(
                    "{at}: `role` must be system, user or assistant (got {})",
                    m.get("role")
                        .map(|r| r.to_string())
                        .unwrap_or_else(|| "none".into())
                ));
            }
            if role == "system" && i != 0 {
                return Err(format!("{at}: a system message may only come first"));
            }
            let Some(content) = m.get("content").and_then(|c| c.as_str()) else {
                return Err(format!("{at}: `content` must be a string"));
            };
            sum.chars += content.chars().count();
            if role == "assistant" && !content.trim().is_empty() {
                answered = true;
                sum.assistant_chars += content.chars().count();
            }
        }
        sum.longest_chars = sum.longest_chars.max(sum.chars - before);
        if !answered {
            return Err(format!(
                "line {n}: the example has no assistant message to learn from"
            ));
        }
        sum.examples += 1;
        if sum.examples > MAX_EXAMPLES {
            return Err(format!(
                "line {n}: more than {MAX_EXAMPLES} examples in one file"
            ));
        }
    }
    if sum.examples < MIN_EXAMPLES {
        return Err(format!(
            "the file has {} examples; fine-tuning needs at least {MIN_EXAMPLES}",
            sum.examples
        ));
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(extra: &str) -> String {
        let ok = r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}"#;
        let mut s = [ok; 10].join("\n");
        s.push('\n');
        s.push_str(extra);
        s
    }

    #[test]
    fn a_good_file_is_counted() {
        let s = check(lines("").as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.examples, 10);
        assert_eq!(s.assistant_chars, 50);
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("{not json", "line 11: not valid JSON"),
            (r#"[1]"#, "line 11: each line must be a JSON object"),
            (r#"{"prompt": "x"}"#, "line 11: unknown key `prompt`"),
            (r#"{"messages": []}"#, "line 11: `messages` is empty"),
            (
                r#"{"messages": [{"role": "robot", "content": "x"}]}"#,
                "line 11, message 1: `role` must be system, user or assistant",
            ),
            (
                r#"{"messages": [{"role": "user", "content": 5}]}"#,
                "line 11, message 1: `content` must be a string",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "only a question"}]}"#,
                "line 11: the example has no assistant message",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}"#,
                "line 11, message 2: a system message may only come first",
            ),
        ];
        for (bad, want) in cases {
            let e = check(lines(bad).as_bytes()).unwrap_err();
            assert!(e.starts_with(want), "{bad}: {e}");
        }
        let e = check(b"\xff\xfe").unwrap_err();
        assert!(e.contains("line 1: the file is not UTF-8"), "{e}");
    }

    #[test]
    fn too_few_examples_are_refused() {
        let one = r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}"#;
        let e = check(one.as_bytes()).unwrap_err();
        assert!(e.contains("at least 10"), "{e}");
    }
}
