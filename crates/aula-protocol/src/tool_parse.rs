//! Tool calls in what a model wrote, when `tool_choice` is `auto` (with
//! `required` or a named tool, decoding is constrained to Aula's own shape).
//!
//! The formats recognised; `tests/data/tool-call-samples.json` holds model
//! outputs in each, well-formed and malformed, with the repository, file and
//! commit each was copied from, and `tests/tool_call_samples.rs` checks them
//! all:
//! * **Aula's own** (what [`crate::ToolSpec::system_prompt`] asks for): one
//!   JSON object `{"name", "arguments"}`, or a JSON list of them.
//! * **Hermes / Qwen 2.5 / Qwen 3**: one or more `<tool_call>{"name",
//!   "arguments"}</tool_call>` blocks (the last one may lack its closing
//!   tag); the text around them is the content. Samples: vLLM's
//!   `tests/tool_parsers/test_hermes_tool_parser.py`.
//! * **Llama 3.1-3.3 JSON**: the whole answer is `{"name", "parameters"}`
//!   (optionally `"type": "function"`), optionally after `<|python_tag|>`,
//!   several separated by `;`; JSON inside prose is text. Samples: vLLM's
//!   `tests/tool_parsers/test_llama3_json_tool_parser.py`.
//! * **Mistral**: `[TOOL_CALLS][{"name", "arguments"}, ...]` (v3; text after
//!   the list is content), or `[TOOL_CALLS]name[ARGS]{...}` repeated (v11+,
//!   `[CALL_ID]id` before `[ARGS]` allowed; `name{...}` where a server
//!   dropped `[ARGS]` as a special token). Samples: vLLM's
//!   `tests/tool_parsers/test_mistral_tool_parser.py`.
//! * **DeepSeek V3 / R1**: `<｜tool▁calls▁begin｜>` then
//!   `<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME` and a ```json block
//!   `<｜tool▁call▁end｜>`, repeated, `<｜tool▁calls▁end｜>`; **DeepSeek V3.1**
//!   writes `<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{...}<｜tool▁call▁end｜>`.
//!   The text around the block is the content. Samples: vLLM's
//!   `tests/tool_parsers/test_deepseekv3_tool_parser.py` and
//!   `test_deepseekv31_tool_parser.py`.
//! * **Granite 3.x**: `<|tool_call|>` (3.0) or `<tool_call>` (3.1, read as
//!   Hermes) followed by a JSON list of `{"name", "arguments"}`; text around
//!   it is the content. Samples: vLLM's
//!   `tests/tool_parsers/test_granite_tool_parser.py`.
//! * **gpt-oss (harmony)**, when the text holds `<|channel|>` or
//!   `<|message|>`: a sequence of messages
//!   `[<|start|>assistant]HEADER<|message|>BODY`, each ended by `<|end|>`,
//!   `<|call|>`, `<|return|>`, the next `<|start|>` or the end of the text.
//!   The header names a channel (`<|channel|>analysis`, `commentary`,
//!   `final`; the last one named counts) and may name a recipient
//!   (`to=functions.NAME`, in the role part or after the channel) and a
//!   content type (`<|constrain|>json`, or a bare `json`). A message to
//!   `functions.NAME` is a call whose body is the JSON arguments, on
//!   whichever channel; a message on `analysis` is reasoning; `final`,
//!   `commentary` (a preamble) and messages without a channel are content
//!   (several joined by a newline). `to=assistant` names no tool. A message
//!   without `<|message|>` is read leniently, as openai-harmony does:
//!   `<|channel|>analysis text` is that channel's text, plain text is
//!   content, and a header cut off before its body is a broken call when it
//!   names a recipient, nothing otherwise.
//!   Samples: openai/harmony's `docs/format.md`, `tests/test_harmony.py`
//!   and `test-data/`, and llama.cpp's `tests/test-chat.cpp` (gpt-oss).
//!
//! The rules:
//! * Every call must name an offered tool and carry a JSON **object** of
//!   arguments (a call without arguments has `{}`; arguments written as a
//!   JSON string holding an object are that object); if any call in the
//!   answer fails that (unknown name, a built-in harmony tool such as
//!   `browser.search` or `python`, JSON that does not parse or was cut off,
//!   arguments that are not an object), the whole answer is text: invalid
//!   arguments are never passed off as a call. For harmony, reasoning
//!   messages before the first other message stay reasoning and the rest is
//!   content as the model wrote it.
//! * A leading `<think>…</think>` is reasoning, and so are harmony's
//!   `analysis` messages: returned apart (`reasoning_content`) and never
//!   read for calls.

use serde_json::Value;

/// What a model's answer holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    /// Text for `content` (without reasoning and calls); None when empty.
    pub content: Option<String>,
    /// Reasoning for `reasoning_content`.
    pub reasoning: Option<String>,
    /// (name, arguments as a JSON string), in order.
    pub calls: Vec<(String, String)>,
}

/// Split a leading `<think>…</think>` from the answer.
pub fn split_reasoning(text: &str) -> (Option<String>, &str) {
    let t = text.trim_start();
    if let Some(rest) = t.strip_prefix("<think>")
        && let Some(end) = rest.find("</think>")
    {
        let reasoning = rest[..end].trim();
        let after = &rest[end + "</think>".len()..];
        return (
            (!reasoning.is_empty()).then(|| reasoning.to_string()),
            after,
        );
    }
    (None, text)
}

/// Read `text` for calls to the tools named `offered`.
pub fn parse(text: &str, offered: &[&str]) -> Parsed {
    if harmony::is_harmony(text) {
        return harmony::parse(text, offered);
    }
    let (reasoning, rest) = split_reasoning(text);
    let (content, calls) = match find_calls(rest, offered) {
        Some((content, calls)) => (content, calls),
        None => (rest.trim().to_string(), Vec::new()),
    };
    Parsed {
        content: (!content.is_empty()).then_some(content),
        reasoning,
        calls,
    }
}

type Calls = Vec<(String, String)>;

/// Text before and after the calls, each trimmed, as one content.
fn around(before: &str, after: &str) -> String {
    let (b, a) = (before.trim(), after.trim());
    match (b.is_empty(), a.is_empty()) {
        (_, true) => b.to_string(),
        (true, false) => a.to_string(),
        (false, false) => format!("{b}\n{a}"),
    }
}

const DS_CALLS_BEGIN: &str = "<｜tool▁calls▁begin｜>";
const GRANITE_CALL: &str = "<|tool_call|>";

/// The content (text around the calls) and the calls; None when `text`
/// holds no well-formed calls.
fn find_calls(text: &str, offered: &[&str]) -> Option<(String, Calls)> {
    if let Some(start) = text.find("<tool_call>") {
        let (calls, after) = hermes(&text[start..], offered)?;
        return Some((around(&text[..start], &after), calls));
    }
    if let Some(start) = text.find("[TOOL_CALLS]") {
        let (calls, after) = mistral(&text[start + "[TOOL_CALLS]".len()..], offered)?;
        return Some((around(&text[..start], after), calls));
    }
    if let Some(start) = text.find(DS_CALLS_BEGIN) {
        let (calls, after) = deepseek(&text[start + DS_CALLS_BEGIN.len()..], offered)?;
        return Some((around(&text[..start], after), calls));
    }
    if let Some(start) = text.find(GRANITE_CALL) {
        let (v, after) = json_prefix(&text[start + GRANITE_CALL.len()..])?;
        return Some((around(&text[..start], after), calls_of(&v, offered)?));
    }
    let t = text.trim();
    let t = t.strip_prefix("<|python_tag|>").unwrap_or(t).trim();
    let t = strip_fence(t);
    if let Ok(v) = serde_json::from_str::<Value>(t) {
        return calls_of(&v, offered).map(|c| (String::new(), c));
    }
    // Llama 3.x may separate several calls with `;`.
    if t.starts_with('{') && t.contains(';') {
        let mut all = Vec::new();
        for part in t.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let v: Value = serde_json::from_str(part).ok()?;
            all.extend(calls_of(&v, offered)?);
        }
        return Some((String::new(), all));
    }
    None
}

/// The JSON value at the start of `t` (after whitespace) and the text after
/// it.
fn json_prefix(t: &str) -> Option<(Value, &str)> {
    let t = t.trim_start();
    let mut values = serde_json::Deserializer::from_str(t).into_iter::<Value>();
    let v = values.next()?.ok()?;
    Some((v, &t[values.byte_offset()..]))
}

/// A ```json fenced block's inside (small models often fence their JSON).
fn strip_fence(t: &str) -> &str {
    t.strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .and_then(|r| r.trim_end().strip_suffix("```"))
        .map(str::trim)
        .unwrap_or(t)
}

/// `<tool_call>` blocks; the text between and after them is returned too.
fn hermes(text: &str, offered: &[&str]) -> Option<(Calls, String)> {
    let mut calls = Vec::new();
    let mut between = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("<tool_call>") {
        between.push(rest[..start].trim());
        let after = &rest[start + "<tool_call>".len()..];
        // A model cut off before the closing tag still wrote whole JSON.
        let (body, next) = match after.find("</tool_call>") {
            Some(end) => (&after[..end], &after[end + "</tool_call>".len()..]),
            None => (after, ""),
        };
        let v: Value = serde_json::from_str(body.trim()).ok()?;
        calls.extend(calls_of(&v, offered)?);
        rest = next;
    }
    between.push(rest.trim());
    let text: Vec<&str> = between.into_iter().filter(|t| !t.is_empty()).collect();
    (!calls.is_empty()).then(|| (calls, text.join("\n")))
}

fn mistral<'a>(text: &'a str, offered: &[&str]) -> Option<(Calls, &'a str)> {
    let t = text.trim();
    if t.starts_with('[') || t.starts_with('{') {
        let (v, after) = json_prefix(t)?;
        return Some((calls_of(&v, offered)?, after));
    }
    // v11: name[ARGS]{json} (Mistral Small 3.2 may add [CALL_ID]id before
    // [ARGS]), repeated after further [TOOL_CALLS] markers. Servers that
    // drop special tokens when detokenizing leave name{json}.
    let mut calls = Vec::new();
    for part in t
        .split("[TOOL_CALLS]")
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (name, args) = match part.split_once("[ARGS]") {
            Some(split) => split,
            None => part.split_at(part.find('{')?),
        };
        let name = name.split("[CALL_ID]").next().unwrap_or(name);
        let args: Value = serde_json::from_str(args.trim()).ok()?;
        calls.push(one(name.trim(), Some(&args), offered)?);
    }
    (!calls.is_empty()).then_some((calls, ""))
}

/// DeepSeek V3 / R1 (`function<｜tool▁sep｜>NAME` and a ```json block) and
/// V3.1 (`NAME<｜tool▁sep｜>{json}`) calls, after `<｜tool▁calls▁begin｜>`.
fn deepseek<'a>(text: &'a str, offered: &[&str]) -> Option<(Calls, &'a str)> {
    const BEGIN: &str = "<｜tool▁call▁begin｜>";
    const END: &str = "<｜tool▁call▁end｜>";
    const SEP: &str = "<｜tool▁sep｜>";
    const CALLS_END: &str = "<｜tool▁calls▁end｜>";
    let mut calls = Vec::new();
    let mut rest = text.trim_start();
    while let Some(after) = rest.strip_prefix(BEGIN) {
        let (body, next) = match after.find(END) {
            Some(end) => (&after[..end], &after[end + END.len()..]),
            None => (after, ""),
        };
        let (left, right) = body.split_once(SEP)?;
        let (name, args) = match right.split_once('\n') {
            Some((name, args)) if left.trim() == "function" => (name, strip_fence(args.trim())),
            _ => (left, right.trim()),
        };
        let args: Value = serde_json::from_str(args).ok()?;
        calls.push(one(name.trim(), Some(&args), offered)?);
        rest = next.trim_start();
    }
    let after = rest.strip_prefix(CALLS_END).unwrap_or(rest);
    (!calls.is_empty()).then_some((calls, after))
}

/// The calls a JSON value is: one call object or a list of them.
fn calls_of(v: &Value, offered: &[&str]) -> Option<Calls> {
    match v {
        Value::Array(list) if !list.is_empty() => list.iter().map(|c| call(c, offered)).collect(),
        Value::Object(_) => Some(vec![call(v, offered)?]),
        _ => None,
    }
}

fn call(v: &Value, offered: &[&str]) -> Option<(String, String)> {
    let o = v.as_object()?;
    // OpenAI-like {"function": {"name", "arguments"}} too.
    let f = o.get("function").and_then(Value::as_object).unwrap_or(o);
    let name = f.get("name")?.as_str()?;
    let args = f.get("arguments").or_else(|| f.get("parameters"));
    one(name, args, offered)
}

fn one(name: &str, args: Option<&Value>, offered: &[&str]) -> Option<(String, String)> {
    if !offered.contains(&name) {
        return None;
    }
    let args = match args {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(a @ Value::Object(_)) => a.clone(),
        // Some models write the arguments as a JSON string.
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(a @ Value::Object(_)) => a,
            _ => return None,
        },
        Some(_) => return None,
    };
    Some((name.to_string(), args.to_string()))
}

/// gpt-oss's harmony format: a sequence of messages, each
/// `[<|start|>assistant]HEADER<|message|>BODY` ended by `<|end|>`, `<|call|>`,
/// `<|return|>`, the next `<|start|>` or the end of the text.
mod harmony {
    use super::{Parsed, Value, one};

    const START: &str = "<|start|>";
    const MESSAGE: &str = "<|message|>";
    const CHANNEL: &str = "<|channel|>";
    const CONSTRAIN: &str = "<|constrain|>";
    const ENDS: [&str; 4] = ["<|end|>", "<|call|>", "<|return|>", START];

    /// Harmony's header tokens appear in the text.
    pub fn is_harmony(text: &str) -> bool {
        text.contains(CHANNEL) || text.contains(MESSAGE)
    }

    enum Kind {
        Reasoning,
        Content,
        /// A call to this recipient, or a header cut off before its body.
        Call(Option<String>),
    }

    struct Msg<'a> {
        /// Where the message starts in the text (its `<|start|>` included).
        at: usize,
        kind: Kind,
        body: &'a str,
    }

    fn messages(text: &str) -> Vec<Msg<'_>> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < text.len() {
            let at = pos;
            let mut seg_start = pos;
            if text[pos..].starts_with(START) {
                seg_start += START.len();
            }
            let seg_end = ENDS
                .iter()
                .filter_map(|e| text[seg_start..].find(e).map(|i| (seg_start + i, e)))
                .min_by_key(|(i, _)| *i);
            let (end, next) = match seg_end {
                Some((i, e)) if *e == START => (i, i),
                Some((i, e)) => (i, i + e.len()),
                None => (text.len(), text.len()),
            };
            let seg = &text[seg_start..end];
            pos = next;
            if let Some(kind) = classify(seg) {
                out.push(Msg {
                    at,
                    kind: kind.0,
                    body: kind.1,
                });
            }
        }
        out
    }

    /// What one message is, and its body; None for an empty one.
    fn classify(seg: &str) -> Option<(Kind, &str)> {
        let Some((header, body)) = seg.split_once(MESSAGE) else {
            // No `<|message|>`: a header cut off (a call if it names a
            // recipient), or text written without one (harmony's lenient
            // reading: `<|channel|>NAME text`, or plain text).
            let t = seg.trim_start();
            if t.is_empty() {
                return None;
            }
            let headerish = seg.contains(CHANNEL)
                || seg.contains(CONSTRAIN)
                || t.starts_with("to=")
                || t.starts_with("assistant");
            if !headerish {
                return Some((Kind::Content, seg.trim()));
            }
            let (channel, recipient) = header_fields(seg);
            if recipient.is_some() {
                return Some((Kind::Call(None), ""));
            }
            // A bare role (`assistant`) is an empty message.
            let rest = t.strip_prefix(CHANNEL)?;
            let body = rest
                .trim_start()
                .split_once(char::is_whitespace)
                .map_or("", |x| x.1);
            return Some((kind_of(channel.as_deref()), body.trim()));
        };
        let (channel, recipient) = header_fields(header);
        match recipient {
            Some(r) => Some((Kind::Call(Some(r)), body.trim())),
            None => Some((kind_of(channel.as_deref()), body.trim())),
        }
    }

    fn kind_of(channel: Option<&str>) -> Kind {
        match channel {
            Some("analysis") => Kind::Reasoning,
            _ => Kind::Content,
        }
    }

    /// The channel (the last one named) and the recipient (`to=…`, other
    /// than `assistant`) of a header.
    fn header_fields(header: &str) -> (Option<String>, Option<String>) {
        let header = header.replace(CONSTRAIN, " ");
        let mut channel = None;
        let mut recipient = None;
        for (i, part) in header.split(CHANNEL).enumerate() {
            let mut words = part.split_whitespace();
            if i > 0 {
                match words.next() {
                    Some(w) if !w.starts_with("to=") => channel = Some(w.to_string()),
                    Some(w) => set_recipient(&mut recipient, w),
                    None => {}
                }
            }
            for w in words {
                set_recipient(&mut recipient, w);
            }
        }
        (channel, recipient)
    }

    fn set_recipient(recipient: &mut Option<String>, word: &str) {
        if let Some(r) = word.strip_prefix("to=")
            && r != "assistant"
            && recipient.is_none()
        {
            *recipient = Some(r.to_string());
        }
    }

    pub fn parse(text: &str, offered: &[&str]) -> Parsed {
        let msgs = messages(text);
        let mut reasoning = Vec::new();
        let mut content = Vec::new();
        let mut calls = Vec::new();
        let mut failed = false;
        for m in &msgs {
            match &m.kind {
                Kind::Reasoning => reasoning.push(m.body),
                Kind::Content => content.push(m.body),
                Kind::Call(to) => {
                    let call = to
                        .as_deref()
                        .and_then(|to| to.strip_prefix("functions."))
                        .and_then(|name| {
                            let args: Value = serde_json::from_str(m.body).ok()?;
                            one(name, Some(&args), offered)
                        });
                    match call {
                        Some(c) => calls.push(c),
                        None => failed = true,
                    }
                }
            }
        }
        let join = |parts: Vec<&str>| {
            let parts: Vec<&str> = parts.into_iter().filter(|p| !p.is_empty()).collect();
            (!parts.is_empty()).then(|| parts.join("\n"))
        };
        if failed {
            // The whole answer is text: the reasoning before it stays
            // reasoning, everything from the first other message on is
            // content as the model wrote it.
            let first = msgs
                .iter()
                .position(|m| !matches!(m.kind, Kind::Reasoning))
                .unwrap_or(msgs.len());
            let rest = msgs.get(first).map_or("", |m| text[m.at..].trim());
            return Parsed {
                content: (!rest.is_empty()).then(|| rest.to_string()),
                reasoning: join(msgs[..first].iter().map(|m| m.body).collect()),
                calls: Vec::new(),
            };
        }
        Parsed {
            content: join(content),
            reasoning: join(reasoning),
            calls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOOLS: &[&str] = &[
        "get_current_temperature",
        "get_temperature_date",
        "get_weather",
    ];

    fn names(p: &Parsed) -> Vec<&str> {
        p.calls.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn hermes_and_qwen_blocks_with_text_before() {
        // Qwen's function-calling guide (qwen.readthedocs.io, "Function
        // Calling", Hermes-style template): Qwen2.5-7B-Instruct's answer.
        let out = "<tool_call>\n{\"name\": \"get_current_temperature\", \"arguments\": {\"location\": \"San Francisco, CA, USA\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_temperature_date\", \"arguments\": {\"location\": \"San Francisco, CA, USA\", \"date\": \"2024-10-01\"}}\n</tool_call>";
        let p = parse(out, TOOLS);
        assert_eq!(
            names(&p),
            ["get_current_temperature", "get_temperature_date"]
        );
        assert_eq!(
            p.calls[1].1,
            // The model's own key order is kept.
            r#"{"location":"San Francisco, CA, USA","date":"2024-10-01"}"#
        );
        assert_eq!(p.content, None);
        let p = parse(
            "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>",
            TOOLS,
        );
        assert_eq!(
            (p.content.as_deref(), names(&p)),
            (Some("Let me check."), vec!["get_weather"])
        );
    }

    #[test]
    fn qwen3_reasoning_is_kept_apart() {
        // Qwen3's thinking mode: reasoning in <think>, then the call.
        let out = "<think>\nThe user wants the weather in Oslo; I should call get_weather.\n</think>\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>";
        let p = parse(out, TOOLS);
        assert_eq!(names(&p), ["get_weather"]);
        assert!(
            p.reasoning
                .as_deref()
                .is_some_and(|r| r.starts_with("The user wants"))
        );
        let p = parse(
            "<think>hmm {\"name\": \"get_weather\"}</think>It is sunny.",
            TOOLS,
        );
        assert_eq!(
            (p.content.as_deref(), p.calls.len()),
            (Some("It is sunny."), 0)
        );
    }

    #[test]
    fn llama_json_with_parameters() {
        // Llama 3.1 model card / prompt format ("JSON based tool calling"):
        // {"name": ..., "parameters": ...}; <|python_tag|> for built-ins.
        let p = parse(
            "{\"name\": \"get_current_temperature\", \"parameters\": {\"location\": \"Paris\"}}",
            TOOLS,
        );
        assert_eq!(
            p.calls,
            vec![(
                "get_current_temperature".into(),
                r#"{"location":"Paris"}"#.into()
            )]
        );
        let p = parse(
            "<|python_tag|>{\"type\": \"function\", \"name\": \"get_weather\", \"parameters\": {\"city\": \"Rome\"}}",
            TOOLS,
        );
        assert_eq!(names(&p), ["get_weather"]);
        let p = parse(
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"A\"}}; {\"name\": \"get_weather\", \"parameters\": {\"city\": \"B\"}}",
            TOOLS,
        );
        assert_eq!(p.calls.len(), 2);
    }

    #[test]
    fn mistral_both_formats() {
        // Mistral's function-calling docs (v3 tokenizer): a JSON list after [TOOL_CALLS].
        let p = parse(
            "[TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]",
            TOOLS,
        );
        assert_eq!(names(&p), ["get_weather"]);
        // v11 tokenizer (Mistral Small 3.2, Magistral): name[ARGS]{...}.
        let p = parse(
            "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}[TOOL_CALLS]get_current_temperature[ARGS]{\"location\": \"Lyon\"}",
            TOOLS,
        );
        assert_eq!(names(&p), ["get_weather", "get_current_temperature"]);
    }

    #[test]
    fn aulas_own_shape_fenced_or_listed() {
        let p = parse(
            "```json\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n```",
            TOOLS,
        );
        assert_eq!(names(&p), ["get_weather"]);
        let p = parse(
            "[{\"name\": \"get_weather\", \"arguments\": {}}, {\"function\": {\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"X\\\"}\"}}]",
            TOOLS,
        );
        assert_eq!(p.calls[1].1, r#"{"city":"X"}"#);
    }

    #[test]
    fn harmony_headers_read_leniently() {
        // A bare `<|start|>assistant` (cut off before its header) is nothing.
        let p = parse(
            "<|channel|>final<|message|>Hi.<|end|><|start|>assistant",
            TOOLS,
        );
        assert_eq!((p.content.as_deref(), p.reasoning), (Some("Hi."), None));
        // `to=assistant` names no tool; the last channel named counts.
        let p = parse(
            "<|channel|>commentary to=assistant<|channel|>analysis<|message|>hmm<|end|><|start|>assistant<|channel|>final<|message|>Done.",
            TOOLS,
        );
        assert_eq!(
            (p.content.as_deref(), p.reasoning.as_deref(), p.calls.len()),
            (Some("Done."), Some("hmm"), 0)
        );
        // A call before a cut-off one does not survive it.
        let p = parse(
            "<|start|>assistant<|channel|>commentary to=functions.get_weather<|message|>{}<|call|><|start|>assistant<|channel|>commentary to=functions.get_weather",
            TOOLS,
        );
        assert!(p.calls.is_empty() && p.content.is_some(), "{p:?}");
    }

    #[test]
    fn malformed_answers_are_text_never_calls() {
        for out in [
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"\n</tool_call>",
            "<tool_call>{\"name\": \"rm_rf\", \"arguments\": {}}</tool_call>",
            "<tool_call>{\"name\": \"get_weather\", \"arguments\": [1]}</tool_call>",
            "<tool_call>{\"name\": \"get_weather\", \"arguments\": {}}</tool_call><tool_call>not json</tool_call>",
            "[TOOL_CALLS]get_weather[ARGS]{city: Paris}",
            "[TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": \"not an object\"}]",
            "{\"name\": \"get_weather\", \"parameters\": {\"a\": 1}}; garbage",
            "The answer is 42.",
            "{\"answer\": 42}",
        ] {
            let p = parse(out, TOOLS);
            assert!(p.calls.is_empty(), "{out} -> {p:?}");
            assert!(p.content.is_some(), "{out}");
        }
    }
}
