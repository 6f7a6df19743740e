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
/// Most messages one example may have (the trainer renders the chat
/// template once per prefix: its work grows with their square).
pub const MAX_MESSAGES_PER_EXAMPLE: usize = 64;

/// Most files whose check is remembered ([`Checked`]).
pub const MAX_CHECKED: usize = 4096;

/// The outcome of checking each file (a file's bytes never change), for
/// at most [`MAX_CHECKED`] files: past that, all are forgotten at once.
#[derive(Default)]
pub struct Checked(std::collections::HashMap<String, Result<Summary, String>>);

impl Checked {
    pub fn get(&self, file_id: &str) -> Option<Result<Summary, String>> {
        self.0.get(file_id).cloned()
    }

    pub fn put(&mut self, file_id: &str, r: Result<Summary, String>) {
        if self.0.len() >= MAX_CHECKED {
            self.0.clear();
        }
        self.0.insert(file_id.to_string(), r);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// What a valid file holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub examples: usize,
    /// Characters of all assistant turns (what is trained on).
    pub assistant_chars: usize,
    /// Characters of all turns.
    pub chars: usize,
    /// Characters of the longest example.
    pub longest_chars: usize,
}

/// Check a training (or validation) file held in memory; the error names
/// the line.
pub fn check(bytes: &[u8]) -> Result<Summary, String> {
    let mut c = Checker::default();
    for raw in bytes.split(|b| *b == b'\n') {
        c.line(raw)?;
    }
    c.finish()
}

/// Check a training file on disk a line at a time: the memory it takes is
/// one example (at most [`MAX_EXAMPLE_CHARS`] characters), whatever the
/// file's size. The outer error is the disk's; the inner, the file's.
pub fn check_file(path: &std::path::Path) -> std::io::Result<Result<Summary, String>> {
    use std::io::BufRead;
    // UTF-8 takes at most 4 bytes a character.
    const MAX_LINE_BYTES: usize = MAX_EXAMPLE_CHARS * 4 + 1;
    let mut r = std::io::BufReader::with_capacity(1 << 16, std::fs::File::open(path)?);
    let mut c = Checker::default();
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let (take, ends) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        if line.len() + take > MAX_LINE_BYTES {
            return Ok(Err(format!(
                "line {}: the example is longer than {MAX_EXAMPLE_CHARS} characters",
                c.n + 1
            )));
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(take + usize::from(ends));
        if ends {
            if let Err(e) = c.line(&line) {
                return Ok(Err(e));
            }
            line.clear();
        }
    }
    if !line.is_empty()
        && let Err(e) = c.line(&line)
    {
        return Ok(Err(e));
    }
    Ok(c.finish())
}

/// The check, a line at a time.
#[derive(Default)]
struct Checker {
    sum: Summary,
    /// Lines seen.
    n: usize,
}

impl Checker {
    /// One line, without its `\n`.
    fn line(&mut self, raw: &[u8]) -> Result<(), String> {
        self.n += 1;
        let n = self.n;
        let sum = &mut self.sum;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let line = std::str::from_utf8(raw)
            .map_err(|_| format!("line {n}: the file is not UTF-8 text"))?;
        if line.trim().is_empty() {
            return Ok(());
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
        if messages.len() > MAX_MESSAGES_PER_EXAMPLE {
            return Err(format!(
                "line {n}: {} messages; an example may have at most {MAX_MESSAGES_PER_EXAMPLE}",
                messages.len()
            ));
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
        Ok(())
    }

    fn finish(self) -> Result<Summary, String> {
        if self.sum.examples < MIN_EXAMPLES {
            return Err(format!(
                "the file has {} examples; fine-tuning needs at least {MIN_EXAMPLES}",
                self.sum.examples
            ));
        }
        Ok(self.sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_are_remembered_within_a_bound() {
        let mut c = Checked::default();
        c.put("file-a", Err("line 3: no messages".into()));
        assert_eq!(c.get("file-a"), Some(Err("line 3: no messages".into())));
        assert_eq!(c.get("file-b"), None);
        for i in 0..MAX_CHECKED + 10 {
            c.put(&format!("file-{i}"), Ok(Summary::default()));
            assert!(c.len() <= MAX_CHECKED);
        }
        assert!(c.get("file-a").is_none());
    }

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
        let many = format!(
            "{{\"messages\": [{}]}}",
            vec![r#"{"role": "user", "content": "q"}"#; MAX_MESSAGES_PER_EXAMPLE + 1].join(", ")
        );
        let cases = [
            ("{not json", "line 11: not valid JSON"),
            (r#"[1]"#, "line 11: each line must be a JSON object"),
            (r#"{"prompt": "x"}"#, "line 11: unknown key `prompt`"),
            (r#"{"messages": []}"#, "line 11: `messages` is empty"),
            (
                many.as_str(),
                "line 11: 65 messages; an example may have at most 64",
            ),
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

    /// The file on disk is read a line at a time and says the same.
    #[test]
    fn a_file_on_disk_is_checked_a_line_at_a_time() {
        let dir = std::env::temp_dir().join(format!("aula-validate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.jsonl");
        std::fs::write(&good, lines("")).unwrap();
        assert_eq!(check_file(&good).unwrap(), check(lines("").as_bytes()));
        let bad = dir.join("bad.jsonl");
        std::fs::write(&bad, lines(r#"{"messages": []}"#)).unwrap();
        let e = check_file(&bad).unwrap().unwrap_err();
        assert!(e.starts_with("line 11: `messages` is empty"), "{e}");
        // One endless line: refused once it passes the longest example,
        // without reading the rest.
        let long = dir.join("long.jsonl");
        std::fs::write(&long, vec![b'x'; MAX_EXAMPLE_CHARS * 4 + 100]).unwrap();
        let e = check_file(&long).unwrap().unwrap_err();
        assert!(e.starts_with("line 1: the example is longer"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn too_few_examples_are_refused() {
        let one = r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}"#;
        let e = check(one.as_bytes()).unwrap_err();
        assert!(e.contains("at least 10"), "{e}");
    }
}
