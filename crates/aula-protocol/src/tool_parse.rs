//! Tool calls in what a model wrote, when `tool_choice` is `auto` (with
//! `required` or a named tool, decoding is constrained to Aula's own shape).
//!
//! The formats recognised (each sample in the tests names its source):
//! * **Aula's own** (what [`crate::ToolSpec::system_prompt`] asks for): one
//!   JSON object `{"name", "arguments"}`, or a JSON list of them.
//! * **Hermes / Qwen 2.5 / Qwen 3**: one or more `<tool_call>{"name",
//!   "arguments"}</tool_call>` blocks; text before the first block is the
//!   message's content.
//! * **Llama 3.1-3.3 JSON**: `{"name", "parameters"}` (optionally
//!   `"type": "function"`), optionally after `<|python_tag|>`, several
//!   separated by `;`.
//! * **Mistral**: `[TOOL_CALLS][{"name", "arguments"}, ...]` (v3), or
//!   `[TOOL_CALLS]name[ARGS]{...}` repeated (v11+).
//!
//! The rules:
//! * Every call must name an offered tool and carry a JSON **object** of
//!   arguments; if any call in the answer fails that (unknown name, JSON
//!   that does not parse, arguments that are not an object), the whole
//!   answer is text: invalid arguments are never passed off as a call.
//! * A leading `<think>…</think>` is reasoning: it is returned apart
//!   (`reasoning_content`) and never read for calls.

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
    let (reasoning, rest) = split_reasoning(text);
    let (content, calls) = match find_calls(rest, offered) {
        Some((before, calls)) => (before.trim().to_string(), calls),
        None => (rest.trim().to_string(), Vec::new()),
    };
    Parsed {
        content: (!content.is_empty()).then_some(content),
        reasoning,
        calls,
    }
}

type Calls = Vec<(String, String)>;

/// The text before the calls, and the calls; None when `text` holds no
/// well-formed calls.
fn find_calls<'a>(text: &'a str, offered: &[&str]) -> Option<(&'a str, Calls)> {
    if let Some(start) = text.find("<tool_call>") {
        return hermes(&text[start..], offered).map(|c| (&text[..start], c));
    }
    if let Some(start) = text.find("[TOOL_CALLS]") {
        return mistral(&text[start + "[TOOL_CALLS]".len()..], offered)
            .map(|c| (&text[..start], c));
    }
    let t = text.trim();
    let t = t.strip_prefix("<|python_tag|>").unwrap_or(t).trim();
    let t = strip_fence(t);
    if let Ok(v) = serde_json::from_str::<Value>(t) {
        return calls_of(&v, offered).map(|c| ("", c));
    }
    // Llama 3.x may separate several calls with `;`.
    if t.starts_with('{') && t.contains(';') {
        let mut all = Vec::new();
        for part in t.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let v: Value = serde_json::from_str(part).ok()?;
            all.extend(calls_of(&v, offered)?);
        }
        return Some(("", all));
    }
    None
}

/// A ```json fenced block's inside (small models often fence their JSON).
fn strip_fence(t: &str) -> &str {
    t.strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .and_then(|r| r.trim_end().strip_suffix("```"))
        .map(str::trim)
        .unwrap_or(t)
}

fn hermes(text: &str, offered: &[&str]) -> Option<Calls> {
    let mut calls = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("<tool_call>") {
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
    (!calls.is_empty()).then_some(calls)
}

fn mistral(text: &str, offered: &[&str]) -> Option<Calls> {
    let t = text.trim();
    if t.starts_with('[') || t.starts_with('{') {
        let v: Value = serde_json::from_str(t).ok()?;
        return calls_of(&v, offered);
    }
    // v11: name[ARGS]{json}, repeated after further [TOOL_CALLS] markers.
    let mut calls = Vec::new();
    for part in t
        .split("[TOOL_CALLS]")
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (name, args) = part.split_once("[ARGS]")?;
        let args: Value = serde_json::from_str(args.trim()).ok()?;
        calls.push(one(name.trim(), Some(&args), offered)?);
    }
    (!calls.is_empty()).then_some(calls)
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
            r#"{"date":"2024-10-01","location":"San Francisco, CA, USA"}"#
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
