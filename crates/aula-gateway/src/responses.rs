//! `POST /v1/responses`: the part of OpenAI's Responses API that answers a
//! question from course material, with citations.
//!
//! The rules:
//! * **Fields taken:** `model`, `input` (a string, or messages with `role`
//!   user/assistant/system/developer and `content` a string or
//!   `input_text`/`output_text` parts), `instructions`, `max_output_tokens`,
//!   `temperature`, `top_p`, `stream`, `tools`, `tool_choice`, `include`
//!   (`file_search_call.results`), `metadata`, `user`, `store` (false, or
//!   true: nothing is kept either way, so `GET /v1/responses/{id}` does not
//!   exist), `parallel_tool_calls`, `truncation: "disabled"`, and
//!   `text.format` (`text`, `json_object`, or `json_schema` — the chat
//!   API's `response_format`, constrained the same way). Any other
//!   field, tool type or value is a 400 naming it — never ignored.
//! * **`file_search`** (`vector_store_ids`, `max_num_results`, `filters`,
//!   `ranking_options`): with `tool_choice` `auto` or `required` Aula always
//!   searches (small models do not decide reliably); `none` does not. The
//!   query is the last user message. A store the caller may not read is a
//!   404, as everywhere.
//! * **The prompt:** the results, numbered, in a system message after the
//!   instructions, as many as fit the model's context next to the question
//!   and `max_output_tokens`. The chat then runs as the caller's own
//!   `/v1/chat/completions` call: limits, fair queue, ledger and usage
//!   count the retrieved text.
//! * **Citations:** the model is asked to cite sources as `[n]`. Each marker
//!   in the answer becomes a `file_citation` annotation (at the marker's
//!   index) of that source's file; an answer that cites nothing gets one
//!   citation of the best result's file at its end.

use crate::auth::Caller;
use crate::identity::Identity;
use aula_protocol::ApiError;
use aula_store::now_ms;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// What `/v1/responses` holds: the request path (its chat calls) and the
/// vector stores (its `file_search` tool).
#[derive(Clone)]
pub struct Handle {
    pub gw: Arc<crate::pipeline::Gateway>,
    pub rag: crate::rag::Handle,
}

const FIELDS: &[&str] = &[
    "model",
    "input",
    "instructions",
    "max_output_tokens",
    "temperature",
    "top_p",
    "stream",
    "tools",
    "tool_choice",
    "include",
    "metadata",
    "user",
    "store",
    "parallel_tool_calls",
    "truncation",
    "text",
];

/// What a source costs in the prompt, roughly: characters per token, kept
/// low so that the estimate errs towards fewer sources.
const CHARS_PER_TOKEN: usize = 3;
/// Results put in the prompt when the model's context is not known.
const SOURCES_WITHOUT_CONTEXT: usize = 8;

struct FileSearch {
    stores: Vec<String>,
    params: crate::rag::api::SearchParams,
    tool: Value,
}

struct Parsed {
    model: String,
    messages: Vec<Value>,
    question: String,
    instructions: Option<String>,
    max_output_tokens: Option<u64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    stream: bool,
    search: Option<FileSearch>,
    include_results: bool,
    tool_choice: Value,
    metadata: Value,
    /// `text.format` as given (echoed), and the chat `response_format` it is.
    text_format: Value,
    response_format: Option<Value>,
    /// Function tools in the chat API's shape, and its `tool_choice`.
    functions: Vec<Value>,
    chat_tool_choice: Option<Value>,
}

/// An input `function_call` item as a chat `tool_calls` entry.
fn function_call_in(m: &Value, param: &str) -> Result<Value, ApiError> {
    let field = |k: &str| {
        m.get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| bad(param, format!("a function_call needs a string `{k}`")))
    };
    Ok(json!({"id": field("call_id")?, "type": "function",
              "function": {"name": field("name")?, "arguments": field("arguments")?}}))
}

/// Streamed chat `tool_calls` deltas assembled as OpenAI's client does: a
/// delta whose `index` is new starts a call (id, name), later ones with that
/// index add to its `arguments`.
fn add_call_deltas(calls: &mut Vec<Value>, deltas: &[Value]) {
    for d in deltas {
        let index = d["index"].as_u64();
        match calls
            .iter_mut()
            .find(|c| index.is_some() && c["index"].as_u64() == index)
        {
            Some(c) => {
                if let Some(a) = d["function"]["arguments"].as_str() {
                    let whole = format!("{}{a}", c["function"]["arguments"].as_str().unwrap_or(""));
                    c["function"]["arguments"] = json!(whole);
                }
                if let Some(id) = d["id"].as_str() {
                    c["id"] = json!(id);
                }
                if let Some(n) = d["function"]["name"].as_str() {
                    c["function"]["name"] = json!(n);
                }
            }
            None => calls.push(d.clone()),
        }
    }
}

/// A chat `tool_calls` entry as a Responses `function_call` output item.
fn function_call_out(c: &Value) -> Value {
    json!({
        "id": format!("fc_{}", crate::random_id(24)),
        "type": "function_call",
        "status": "completed",
        "call_id": c["id"],
        "name": c["function"]["name"],
        "arguments": c["function"]["arguments"],
    })
}

/// `text: {"format": ...}`: `text` (the default), `json_object`, or
/// `json_schema` with `name`, `schema`, `strict` — the chat API's
/// `response_format`, flattened as the Responses API writes it.
fn text_format(o: &Map<String, Value>) -> Result<(Value, Option<Value>), ApiError> {
    let Some(t) = o.get("text").filter(|v| !v.is_null()) else {
        return Ok((json!({"type": "text"}), None));
    };
    let to = t
        .as_object()
        .ok_or_else(|| bad("text", "`text` must be an object with a `format`"))?;
    if let Some(k) = to.keys().find(|k| *k != "format") {
        return Err(bad(
            "text",
            format!("`text.{k}` is not supported; only `text.format` is"),
        ));
    }
    let Some(f) = to.get("format").filter(|v| !v.is_null()) else {
        return Ok((json!({"type": "text"}), None));
    };
    let fo = f
        .as_object()
        .ok_or_else(|| bad("text", "`text.format` must be an object with a `type`"))?;
    match fo.get("type").and_then(Value::as_str) {
        Some("text") if fo.len() == 1 => Ok((f.clone(), None)),
        Some("json_object") if fo.len() == 1 => {
            Ok((f.clone(), Some(json!({"type": "json_object"}))))
        }
        Some("json_schema") => {
            if let Some(k) = fo.keys().find(|k| {
                !matches!(
                    k.as_str(),
                    "type" | "name" | "schema" | "strict" | "description"
                )
            }) {
                return Err(bad("text", format!("`text.format` has no field `{k}`")));
            }
            let mut js = Map::new();
            for k in ["name", "schema", "strict", "description"] {
                if let Some(v) = fo.get(k) {
                    js.insert(k.into(), v.clone());
                }
            }
            Ok((
                f.clone(),
                Some(json!({"type": "json_schema", "json_schema": js})),
            ))
        }
        _ => Err(bad(
            "text",
            "`text.format.type` must be text, json_object or json_schema",
        )),
    }
}

fn bad(param: &str, m: impl Into<String>) -> ApiError {
    ApiError::invalid_param(param, m)
}

fn text_of(content: &Value, param: &str) -> Result<String, ApiError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                match (p["type"].as_str(), p["text"].as_str()) {
                    (Some("input_text" | "output_text" | "text"), Some(t)) => out.push_str(t),
                    (Some(t), _) => {
                        return Err(bad(
                            param,
                            format!(
                                "content parts of type `{t}` are not supported; use input_text"
                            ),
                        ));
                    }
                    _ => return Err(bad(param, "each content part needs a `type` and a `text`")),
                }
            }
            Ok(out)
        }
        _ => Err(bad(
            param,
            "`content` must be a string or a list of input_text parts",
        )),
    }
}

fn parse(o: &Map<String, Value>) -> Result<Parsed, ApiError> {
    if let Some(k) = o.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad(
            k,
            format!(
                "`{k}` is not supported by Aula's /v1/responses; it takes: {}",
                FIELDS.join(", ")
            ),
        ));
    }
    let model = o
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| bad("model", "`model` is required"))?
        .to_string();
    let mut messages = Vec::new();
    let mut question = String::new();
    match o.get("input") {
        Some(Value::String(s)) if !s.trim().is_empty() => {
            messages.push(json!({"role": "user", "content": s}));
            question = s.clone();
        }
        Some(Value::Array(items)) if !items.is_empty() => {
            for (i, m) in items.iter().enumerate() {
                let param = format!("input[{i}]");
                match m.get("type").and_then(Value::as_str) {
                    None | Some("message") => {}
                    Some("function_call") => {
                        let call = function_call_in(m, &param)?;
                        // Calls in a row are one assistant turn.
                        match messages.last_mut() {
                            Some(last)
                                if last["role"] == "assistant" && last["tool_calls"].is_array() =>
                            {
                                if let Some(a) = last["tool_calls"].as_array_mut() {
                                    a.push(call);
                                }
                            }
                            _ => messages.push(
                                json!({"role": "assistant", "content": null, "tool_calls": [call]}),
                            ),
                        }
                        continue;
                    }
                    Some("function_call_output") => {
                        let call_id =
                            m.get("call_id").and_then(Value::as_str).ok_or_else(|| {
                                bad(&param, "a function_call_output needs a `call_id`")
                            })?;
                        let output = match m.get("output") {
                            Some(Value::String(s)) => s.clone(),
                            Some(v @ Value::Array(_)) => text_of(v, &param)?,
                            _ => {
                                return Err(bad(
                                    &param,
                                    "a function_call_output needs an `output` string",
                                ));
                            }
                        };
                        messages.push(
                            json!({"role": "tool", "tool_call_id": call_id, "content": output}),
                        );
                        continue;
                    }
                    Some(t) => {
                        return Err(bad(
                            &param,
                            format!(
                                "input items of type `{t}` are not supported; send messages, function_call and function_call_output items"
                            ),
                        ));
                    }
                }
                let role = m
                    .get("role")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(&param, "each input message needs a `role`"))?;
                let role = match role {
                    "user" | "assistant" | "system" => role,
                    "developer" => "system",
                    other => {
                        return Err(bad(
                            &param,
                            format!(
                                "`{other}` is not a role; use user, assistant, system or developer"
                            ),
                        ));
                    }
                };
                let text = text_of(m.get("content").unwrap_or(&Value::Null), &param)?;
                if role == "user" {
                    question = text.clone();
                }
                messages.push(json!({"role": role, "content": text}));
            }
        }
        _ => {
            return Err(bad(
                "input",
                "`input` must be a non-empty string or a list of messages",
            ));
        }
    }
    if question.trim().is_empty() {
        return Err(bad("input", "`input` needs a user message with text"));
    }
    let instructions = match o.get("instructions") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad("instructions", "`instructions` must be a string")),
    };
    let max_output_tokens = match o.get("max_output_tokens") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
            bad(
                "max_output_tokens",
                "`max_output_tokens` must be a positive integer",
            )
        })?),
    };
    let num = |k: &str, max: f64| -> Result<Option<f64>, ApiError> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Ok(Some(
                v.as_f64()
                    .filter(|x| (0.0..=max).contains(x))
                    .ok_or_else(|| bad(k, format!("`{k}` must be 0 to {max}")))?,
            )),
        }
    };
    let temperature = num("temperature", 2.0)?;
    let top_p = num("top_p", 1.0)?;
    let flag = |k: &str| -> Result<Option<bool>, ApiError> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(bad(k, format!("`{k}` must be true or false"))),
        }
    };
    let stream = flag("stream")?.unwrap_or(false);
    flag("store")?;
    flag("parallel_tool_calls")?;
    if let Some(t) = o.get("truncation").filter(|v| !v.is_null())
        && t.as_str() != Some("disabled")
    {
        return Err(bad(
            "truncation",
            "only `truncation: \"disabled\"` is supported",
        ));
    }
    if let Some(u) = o.get("user").filter(|v| !v.is_null())
        && !u.is_string()
    {
        return Err(bad("user", "`user` must be a string"));
    }
    let metadata = match o.get("metadata") {
        None | Some(Value::Null) => json!({}),
        Some(Value::Object(m)) if m.len() <= 16 && m.values().all(Value::is_string) => {
            Value::Object(m.clone())
        }
        Some(_) => {
            return Err(bad(
                "metadata",
                "`metadata` must be an object of at most 16 strings",
            ));
        }
    };
    let mut include_results = false;
    match o.get("include") {
        None | Some(Value::Null) => {}
        Some(Value::Array(l)) => {
            for x in l {
                match x.as_str() {
                    Some("file_search_call.results") => include_results = true,
                    Some(other) => {
                        return Err(bad(
                            "include",
                            format!(
                                "`{other}` cannot be included; Aula includes only file_search_call.results"
                            ),
                        ));
                    }
                    None => return Err(bad("include", "`include` must be a list of strings")),
                }
            }
        }
        Some(_) => return Err(bad("include", "`include` must be a list of strings")),
    }
    let mut search = None;
    let mut functions: Vec<Value> = Vec::new();
    match o.get("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(tools)) => {
            for (i, t) in tools.iter().enumerate() {
                let param = format!("tools[{i}]");
                let to = t
                    .as_object()
                    .ok_or_else(|| bad(&param, "each tool must be an object"))?;
                match to.get("type").and_then(Value::as_str) {
                    Some("file_search") => {}
                    Some("function") => {
                        if let Some(k) = to.keys().find(|k| {
                            !matches!(
                                k.as_str(),
                                "type" | "name" | "description" | "parameters" | "strict"
                            )
                        }) {
                            return Err(bad(&param, format!("a function tool has no field `{k}`")));
                        }
                        // The chat API's shape; it validates names and schemas.
                        let mut f = Map::new();
                        for k in ["name", "description", "parameters", "strict"] {
                            if let Some(v) = to.get(k).filter(|v| !v.is_null()) {
                                f.insert(k.into(), v.clone());
                            }
                        }
                        functions.push(json!({"type": "function", "function": f}));
                        continue;
                    }
                    Some(other) => {
                        return Err(bad(
                            &param,
                            format!(
                                "tools of type `{other}` are not supported by Aula's /v1/responses; file_search and function are"
                            ),
                        ));
                    }
                    None => return Err(bad(&param, "each tool needs a `type`")),
                }
                if search.is_some() {
                    return Err(bad(
                        &param,
                        "give one file_search tool (it takes several vector_store_ids)",
                    ));
                }
                if let Some(k) = to.keys().find(|k| {
                    !matches!(
                        k.as_str(),
                        "type"
                            | "vector_store_ids"
                            | "max_num_results"
                            | "filters"
                            | "ranking_options"
                    )
                }) {
                    return Err(bad(
                        &param,
                        format!("a file_search tool has no field `{k}`"),
                    ));
                }
                let stores = to
                    .get("vector_store_ids")
                    .and_then(Value::as_array)
                    .filter(|l| !l.is_empty() && l.len() <= 16)
                    .and_then(|l| {
                        l.iter()
                            .map(|s| s.as_str().map(String::from))
                            .collect::<Option<Vec<_>>>()
                    })
                    .ok_or_else(|| {
                        bad(
                            &param,
                            "a file_search tool needs `vector_store_ids`: 1 to 16 store ids",
                        )
                    })?;
                let mut so = to.clone();
                so.insert("query".into(), json!(question));
                let params = crate::rag::api::search_params(&so, "query", "max_num_results")?;
                search = Some(FileSearch {
                    stores,
                    params,
                    tool: t.clone(),
                });
            }
        }
        Some(_) => return Err(bad("tools", "`tools` must be a list")),
    }
    let (text_format, response_format) = text_format(o)?;
    let tool_choice = match o.get("tool_choice") {
        None | Some(Value::Null) => json!("auto"),
        Some(Value::String(s)) if matches!(s.as_str(), "auto" | "none" | "required") => json!(s),
        Some(v) if v["type"].as_str() == Some("file_search") => v.clone(),
        Some(v) if v["type"].as_str() == Some("function") && v["name"].is_string() => v.clone(),
        Some(_) => {
            return Err(bad(
                "tool_choice",
                "`tool_choice` must be auto, none, required, {\"type\": \"file_search\"} or {\"type\": \"function\", \"name\": ...}",
            ));
        }
    };
    if tool_choice["type"] == "function"
        && !functions
            .iter()
            .any(|f| f["function"]["name"] == tool_choice["name"])
    {
        return Err(bad(
            "tool_choice",
            format!(
                "`tool_choice` names the function {}, which is not among `tools`",
                tool_choice["name"]
            ),
        ));
    }
    if tool_choice["type"] == "file_search" && search.is_none() {
        return Err(bad(
            "tool_choice",
            "`tool_choice` asks for file_search, which is not among `tools`",
        ));
    }
    if tool_choice == json!("required") && search.is_none() && functions.is_empty() {
        return Err(bad("tool_choice", "`tool_choice: required` needs a tool"));
    }
    // What the chat is asked: the function tools and how to choose.
    let chat_tool_choice = if functions.is_empty() {
        None
    } else {
        Some(match &tool_choice {
            Value::String(s) if s == "required" && search.is_some() => json!("auto"),
            Value::String(_) => tool_choice.clone(),
            v if v["type"] == "function" => {
                json!({"type": "function", "function": {"name": v["name"]}})
            }
            _ => json!("auto"),
        })
    };
    if tool_choice == json!("none") {
        search = search.map(|mut s| {
            s.stores.clear();
            s
        });
    }
    Ok(Parsed {
        model,
        messages,
        question,
        instructions,
        max_output_tokens,
        temperature,
        top_p,
        stream,
        search,
        include_results,
        tool_choice,
        metadata,
        text_format,
        response_format,
        functions,
        chat_tool_choice,
    })
}

/// The sources that fit the model's context next to the conversation.
fn fitting(
    found: Vec<crate::rag::search::Found>,
    context: Option<u32>,
    p: &Parsed,
) -> Vec<crate::rag::search::Found> {
    let Some(ctx) = context else {
        return found.into_iter().take(SOURCES_WITHOUT_CONTEXT).collect();
    };
    let used: usize = p
        .messages
        .iter()
        .map(|m| m["content"].as_str().map_or(0, str::len))
        .sum::<usize>()
        + p.instructions.as_ref().map_or(0, String::len);
    let out_tokens = p.max_output_tokens.unwrap_or(256) as usize;
    // Room in characters, with a margin for the template and the header.
    let mut room = (ctx as usize)
        .saturating_sub(out_tokens + 128)
        .saturating_mul(CHARS_PER_TOKEN)
        .saturating_sub(used * 2);
    let mut out = Vec::new();
    for f in found {
        let cost = f.text.len() + f.filename.len() + 16;
        if cost > room {
            break;
        }
        room -= cost;
        out.push(f);
    }
    out
}

fn sources_message(sources: &[crate::rag::search::Found]) -> String {
    let mut s = String::from(
        "Answer the question using the sources below. After each statement, cite the source it comes from by its number in square brackets, like [1]. If the sources do not answer the question, say so.\n",
    );
    for (i, f) in sources.iter().enumerate() {
        s.push_str(&format!(
            "\n[{}] ({})\n{}\n",
            i + 1,
            f.filename,
            f.text.trim()
        ));
    }
    s
}

/// `file_citation` annotations: one per `[n]` marker naming a source, at
/// its index (in characters); none found: the best source, at the end.
fn annotations(text: &str, sources: &[crate::rag::search::Found]) -> Vec<Value> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '[' {
            let mut j = i + 1;
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
            if j > i + 1 && j < chars.len() && chars[j] == ']' {
                let n: usize = chars[i + 1..j]
                    .iter()
                    .collect::<String>()
                    .parse()
                    .unwrap_or(0);
                if let Some(f) = n.checked_sub(1).and_then(|k| sources.get(k)) {
                    out.push(json!({"type": "file_citation", "index": i, "file_id": f.file_id, "filename": f.filename}));
                }
                i = j;
            }
        }
        i += 1;
    }
    if out.is_empty()
        && let Some(f) = sources.first()
    {
        out.push(json!({"type": "file_citation", "index": chars.len(), "file_id": f.file_id, "filename": f.filename}));
    }
    out
}

fn search_item(id: &str, p: &Parsed, results: &[crate::rag::search::Found], status: &str) -> Value {
    let results = if p.include_results && status == "completed" {
        json!(results
            .iter()
            .map(|f| json!({"file_id": f.file_id, "filename": f.filename, "score": f.score, "text": f.text, "attributes": f.attributes}))
            .collect::<Vec<_>>())
    } else {
        Value::Null
    };
    json!({"id": id, "type": "file_search_call", "status": status, "queries": [p.question], "results": results})
}

fn message_item(id: &str, text: &str, annotations: Vec<Value>, status: &str) -> Value {
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": annotations, "logprobs": []}],
    })
}

struct Shell {
    id: String,
    created_at: i64,
    model: String,
    p_instructions: Option<String>,
    max_output_tokens: Option<u64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    tools: Value,
    tool_choice: Value,
    metadata: Value,
    text_format: Value,
}

impl Shell {
    /// The Response object; `usage` left out while it is not known (OpenAI's
    /// description has no null for it).
    fn object(&self, status: &str, output: Vec<Value>, usage: Value, incomplete: Value) -> Value {
        let mut v = json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": null,
            "incomplete_details": incomplete,
            "instructions": self.p_instructions,
            "max_output_tokens": self.max_output_tokens,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": true,
            "previous_response_id": null,
            "reasoning": {"effort": null, "summary": null},
            "store": false,
            "temperature": self.temperature.unwrap_or(1.0),
            "top_p": self.top_p.unwrap_or(1.0),
            "text": {"format": self.text_format},
            "tool_choice": self.tool_choice,
            "tools": self.tools,
            "truncation": "disabled",
            "usage": usage,
            "metadata": self.metadata,
        });
        if v["usage"].is_null()
            && let Some(o) = v.as_object_mut()
        {
            o.remove("usage");
        }
        v
    }
}

fn usage(prompt: u64, completion: u64) -> Value {
    json!({
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    })
}

/// `POST /v1/responses`.
pub async fn create(State(st): State<Handle>, Caller(id): Caller, body: Body) -> Response {
    match run(st, &id, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run(st: Handle, id: &Identity, body: Body) -> Result<Response, ApiError> {
    let bytes = crate::body::read_json(body).await?;
    respond(st, id, bytes).await
}

/// A Responses call for `id`, its body read: the API's, and the web page's
/// playground when it searches course material.
pub(crate) async fn respond(
    st: Handle,
    id: &crate::identity::Identity,
    bytes: bytes::Bytes,
) -> Result<Response, ApiError> {
    let o = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return Err(ApiError::invalid("the body must be a JSON object")),
        Err(e) => {
            return Err(ApiError::invalid(format!(
                "the body is not valid JSON: {e}"
            )));
        }
    };
    let p = parse(&o)?;
    let route = st.gw.router.get(&p.model).map_err(|_| {
        ApiError::ModelNotFound(format!(
            "the model `{}` does not exist; models you may use: {}",
            p.model,
            st.gw.visible_models(id).join(", ")
        ))
    })?;
    let context = route.context;
    let sources = match &p.search {
        Some(s) if !s.stores.is_empty() => {
            for store_id in &s.stores {
                match st
                    .gw
                    .store
                    .vector_store(store_id)
                    .await
                    .map_err(crate::files::store_error)?
                {
                    Some(v) if crate::rag::readable(&v, id) => {}
                    _ => return Err(ApiError::NotFound(format!("no vector store `{store_id}`"))),
                }
            }
            let found = crate::rag::search::search(
                &st.rag,
                id,
                &s.stores,
                &crate::rag::search::Request {
                    queries: &s.params.queries,
                    mode: s.params.mode,
                    filter: s.params.filter.as_ref(),
                    k: s.params.k,
                    threshold: s.params.threshold,
                },
            )
            .await?;
            Some(fitting(found, context, &p))
        }
        _ => None,
    };
    let mut messages = Vec::new();
    if let Some(i) = &p.instructions {
        messages.push(json!({"role": "system", "content": i}));
    }
    if let Some(s) = sources.as_ref().filter(|s| !s.is_empty()) {
        messages.push(json!({"role": "system", "content": sources_message(s)}));
    }
    messages.extend(p.messages.iter().cloned());
    let mut chat = json!({"model": p.model, "messages": messages, "stream": p.stream});
    if let Some(m) = p.max_output_tokens {
        chat["max_tokens"] = json!(m);
    }
    if let Some(t) = p.temperature {
        chat["temperature"] = json!(t);
    }
    if let Some(t) = p.top_p {
        chat["top_p"] = json!(t);
    }
    if p.stream {
        chat["stream_options"] = json!({"include_usage": true});
    }
    // The chat API validates the format (a bad schema is its 400).
    if let Some(f) = &p.response_format {
        chat["response_format"] = f.clone();
    }
    if let Some(c) = &p.chat_tool_choice {
        chat["tools"] = json!(p.functions);
        chat["tool_choice"] = c.clone();
    }
    let shell = Shell {
        id: format!("resp_{}", crate::random_id(24)),
        created_at: now_ms() / 1000,
        model: p.model.clone(),
        p_instructions: p.instructions.clone(),
        max_output_tokens: p.max_output_tokens,
        temperature: p.temperature,
        top_p: p.top_p,
        tools: {
            let mut t: Vec<Value> = p.search.iter().map(|s| s.tool.clone()).collect();
            t.extend(p.functions.iter().map(|f| {
                let mut flat = f["function"].clone();
                flat["type"] = json!("function");
                flat
            }));
            json!(t)
        },
        tool_choice: p.tool_choice.clone(),
        metadata: p.metadata.clone(),
        text_format: p.text_format.clone(),
    };
    let fs_id = format!("fs_{}", crate::random_id(24));
    let msg_id = format!("msg_{}", crate::random_id(24));
    let sources = sources.unwrap_or_default();
    let searched = p.search.as_ref().is_some_and(|s| !s.stores.is_empty());
    if !p.stream {
        let v =
            crate::pipeline::call_json(st.gw.clone(), "/v1/chat/completions", id, &chat).await?;
        let text = v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let cut = v["choices"][0]["finish_reason"].as_str() == Some("length");
        let mut output = Vec::new();
        if searched {
            output.push(search_item(&fs_id, &p, &sources, "completed"));
        }
        let notes = if searched {
            annotations(&text, &sources)
        } else {
            Vec::new()
        };
        let calls = v["choices"][0]["message"]["tool_calls"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if calls.is_empty() || !text.is_empty() {
            output.push(message_item(
                &msg_id,
                &text,
                notes,
                if cut { "incomplete" } else { "completed" },
            ));
        }
        output.extend(calls.iter().map(function_call_out));
        let u = usage(
            v["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
            v["usage"]["completion_tokens"].as_u64().unwrap_or(0),
        );
        let (status, incomplete) = if cut {
            ("incomplete", json!({"reason": "max_output_tokens"}))
        } else {
            ("completed", Value::Null)
        };
        return Ok(axum::Json(shell.object(status, output, u, incomplete)).into_response());
    }
    let bytes =
        Bytes::from(serde_json::to_vec(&chat).map_err(|e| ApiError::Internal(e.to_string()))?);
    let resp = crate::pipeline::call(
        st.gw.clone(),
        "/v1/chat/completions",
        id,
        bytes,
        std::time::Instant::now(),
    )
    .await?;
    if !resp.status().is_success() {
        return Ok(resp);
    }
    Ok(stream(
        resp,
        Streamed {
            shell,
            fs_id,
            msg_id,
            p,
            sources,
            searched,
        },
    ))
}

struct Streamed {
    shell: Shell,
    fs_id: String,
    msg_id: String,
    p: Parsed,
    sources: Vec<crate::rag::search::Found>,
    searched: bool,
}

struct Events {
    seq: u64,
}

impl Events {
    fn event(&mut self, kind: &str, mut data: Value) -> Vec<u8> {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        format!("event: {kind}\ndata: {data}\n\n").into_bytes()
    }
}

/// The chat's server-sent events, as the Responses API streams them.
fn stream(resp: Response, s: Streamed) -> Response {
    let upstream = resp.into_body().into_data_stream();
    let mut ev = Events { seq: 0 };
    let mut head = Vec::new();
    let in_progress = s
        .shell
        .object("in_progress", Vec::new(), Value::Null, Value::Null);
    head.extend(ev.event("response.created", json!({"response": in_progress})));
    head.extend(ev.event("response.in_progress", json!({"response": in_progress})));
    let mut index = 0;
    if s.searched {
        let item = search_item(&s.fs_id, &s.p, &s.sources, "in_progress");
        head.extend(ev.event(
            "response.output_item.added",
            json!({"output_index": 0, "item": item}),
        ));
        for k in ["in_progress", "searching", "completed"] {
            head.extend(ev.event(
                &format!("response.file_search_call.{k}"),
                json!({"output_index": 0, "item_id": s.fs_id}),
            ));
        }
        let item = search_item(&s.fs_id, &s.p, &s.sources, "completed");
        head.extend(ev.event(
            "response.output_item.done",
            json!({"output_index": 0, "item": item}),
        ));
        index = 1;
    }
    head.extend(ev.event("response.output_item.added", json!({"output_index": index, "item": message_item(&s.msg_id, "", Vec::new(), "in_progress")})));
    head.extend(ev.event("response.content_part.added", json!({"output_index": index, "item_id": s.msg_id, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}})));
    struct St {
        up: axum::body::BodyDataStream,
        ev: Events,
        s: Streamed,
        buf: Vec<u8>,
        text: String,
        usage: (u64, u64),
        cut: bool,
        index: usize,
        done: bool,
        /// Function calls the chat made (chat `tool_calls` entries).
        calls: Vec<Value>,
    }
    let state = St {
        up: upstream,
        ev,
        s,
        buf: Vec::new(),
        text: String::new(),
        usage: (0, 0),
        cut: false,
        index,
        done: false,
        calls: Vec::new(),
    };
    let body = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(Bytes::from(head)) }).chain(futures::stream::unfold(Some(state), |state| async move {
        let mut t = state?;
        loop {
            if t.done {
                return None;
            }
            let mut out = Vec::new();
            match t.up.next().await {
                Some(Ok(chunk)) => {
                    t.buf.extend_from_slice(&chunk);
                    while let Some(pos) = t.buf.windows(2).position(|w| w == b"\n\n") {
                        let frame: Vec<u8> = t.buf.drain(..pos + 2).collect();
                        for line in String::from_utf8_lossy(&frame).lines() {
                            let Some(data) = line.strip_prefix("data:").map(str::trim) else { continue };
                            if data == "[DONE]" {
                                continue;
                            }
                            let Ok(v) = serde_json::from_str::<Value>(data) else { continue };
                            if let Some(e) = v.get("error") {
                                out.extend(t.ev.event("error", json!({"code": e["code"], "message": e["message"], "param": null})));
                                let failed = t.s.shell.object("failed", Vec::new(), Value::Null, Value::Null);
                                out.extend(t.ev.event("response.failed", json!({"response": failed})));
                                t.done = true;
                                return Some((Ok(Bytes::from(out)), Some(t)));
                            }
                            if let Some(d) = v["choices"][0]["delta"]["content"].as_str().filter(|d| !d.is_empty()) {
                                t.text.push_str(d);
                                out.extend(t.ev.event("response.output_text.delta", json!({"output_index": t.index, "item_id": t.s.msg_id, "content_index": 0, "delta": d, "logprobs": []})));
                            }
                            if let Some(calls) = v["choices"][0]["delta"]["tool_calls"].as_array() {
                                add_call_deltas(&mut t.calls, calls);
                            }
                            if v["choices"][0]["finish_reason"].as_str() == Some("length") {
                                t.cut = true;
                            }
                            if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                                t.usage = (u["prompt_tokens"].as_u64().unwrap_or(0), u["completion_tokens"].as_u64().unwrap_or(0));
                            }
                        }
                    }
                }
                Some(Err(e)) => {
                    out.extend(t.ev.event("error", json!({"code": "bad_gateway", "message": e.to_string(), "param": null})));
                    t.done = true;
                }
                None => {
                    let notes = if t.s.searched { annotations(&t.text, &t.s.sources) } else { Vec::new() };
                    for (i, a) in notes.iter().enumerate() {
                        out.extend(t.ev.event("response.output_text.annotation.added", json!({"output_index": t.index, "item_id": t.s.msg_id, "content_index": 0, "annotation_index": i, "annotation": a})));
                    }
                    out.extend(t.ev.event("response.output_text.done", json!({"output_index": t.index, "item_id": t.s.msg_id, "content_index": 0, "text": t.text, "logprobs": []})));
                    out.extend(t.ev.event("response.content_part.done", json!({"output_index": t.index, "item_id": t.s.msg_id, "content_index": 0, "part": {"type": "output_text", "text": t.text, "annotations": notes, "logprobs": []}})));
                    let status = if t.cut { "incomplete" } else { "completed" };
                    let message = message_item(&t.s.msg_id, &t.text, notes, status);
                    out.extend(t.ev.event("response.output_item.done", json!({"output_index": t.index, "item": message})));
                    let mut output = Vec::new();
                    if t.s.searched {
                        output.push(search_item(&t.s.fs_id, &t.s.p, &t.s.sources, "completed"));
                    }
                    output.push(message);
                    // Function calls after the message, each as its own item.
                    for (k, c) in t.calls.iter().enumerate() {
                        let index = t.index + 1 + k;
                        let item = function_call_out(c);
                        let mut started = item.clone();
                        started["status"] = json!("in_progress");
                        started["arguments"] = json!("");
                        out.extend(t.ev.event("response.output_item.added", json!({"output_index": index, "item": started})));
                        out.extend(t.ev.event("response.function_call_arguments.delta", json!({"output_index": index, "item_id": item["id"], "delta": item["arguments"]})));
                        out.extend(t.ev.event("response.function_call_arguments.done", json!({"output_index": index, "item_id": item["id"], "arguments": item["arguments"]})));
                        out.extend(t.ev.event("response.output_item.done", json!({"output_index": index, "item": item})));
                        output.push(item);
                    }
                    let incomplete = if t.cut { json!({"reason": "max_output_tokens"}) } else { Value::Null };
                    let done = t.s.shell.object(status, output, usage(t.usage.0, t.usage.1), incomplete);
                    out.extend(t.ev.event(if t.cut { "response.incomplete" } else { "response.completed" }, json!({"response": done})));
                    t.done = true;
                }
            }
            if !out.is_empty() {
                return Some((Ok(Bytes::from(out)), Some(t)));
            }
        }
    }));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn found(file: &str) -> crate::rag::search::Found {
        crate::rag::search::Found {
            store_id: "vs".into(),
            file_id: file.into(),
            filename: format!("{file}.txt"),
            score: 1.0,
            attributes: Map::new(),
            text: "x".into(),
        }
    }

    #[test]
    fn markers_become_citations_and_an_uncited_answer_cites_the_best_source() {
        let s = [found("a"), found("b")];
        let a = annotations("Cells [2] make energy [1]. [9] [x]", &s);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0]["file_id"], "b");
        assert_eq!(a[0]["index"], 6);
        assert_eq!(a[1]["file_id"], "a");
        let a = annotations("né answer", &s);
        assert_eq!(a.len(), 1);
        assert_eq!(
            (a[0]["file_id"].as_str(), a[0]["index"].as_u64()),
            (Some("a"), Some(9))
        );
        assert!(annotations("x", &[]).is_empty());
    }

    #[test]
    fn streamed_call_deltas_become_one_call() {
        let mut calls = Vec::new();
        add_call_deltas(
            &mut calls,
            &[
                json!({"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}),
            ],
        );
        for piece in ["{\"city\"", ": \"Oslo\"", "}"] {
            add_call_deltas(
                &mut calls,
                &[json!({"index": 0, "function": {"arguments": piece}})],
            );
        }
        // A whole call in one delta (as a single chunk) is one call too.
        add_call_deltas(
            &mut calls,
            &[
                json!({"index": 1, "id": "call_2", "type": "function", "function": {"name": "add", "arguments": "{}"}}),
            ],
        );
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert_eq!(calls[0]["id"], "call_1");
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        assert_eq!(calls[0]["function"]["arguments"], "{\"city\": \"Oslo\"}");
        assert_eq!(calls[1]["function"]["name"], "add");
    }

    #[test]
    fn unknown_fields_and_tools_are_named() {
        let e = |v: Value| match parse(v.as_object().unwrap()) {
            Err(e) => e.to_string(),
            Ok(_) => "ok".into(),
        };
        assert!(
            e(json!({"model": "m", "input": "q", "previous_response_id": "r"}))
                .contains("`previous_response_id` is not supported")
        );
        assert!(
            e(json!({"model": "m", "input": "q", "tools": [{"type": "web_search"}]}))
                .contains("`web_search` are not supported")
        );
        assert!(
            e(json!({"model": "m", "input": "q", "tools": [{"type": "file_search"}]}))
                .contains("vector_store_ids")
        );
        assert!(
            e(json!({"model": "m", "input": "q", "include": ["reasoning.encrypted_content"]}))
                .contains("cannot be included")
        );
        assert!(e(json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]})).contains("input_image"));
        assert_eq!(
            e(
                json!({"model": "m", "input": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": [{"type": "input_text", "text": "q"}]}]})
            ),
            "ok"
        );
        assert!(e(json!({"model": "m", "input": "q", "tools": [{"type": "file_search", "vector_store_ids": ["vs"], "filters": {"type": "like"}}]})).contains("like"));
        assert!(
            e(json!({"model": "m", "input": "q", "text": {"format": {"type": "xml"}}}))
                .contains("text.format.type")
        );
        assert!(
            e(json!({"model": "m", "input": "q", "text": {"verbosity": "low"}}))
                .contains("text.verbosity")
        );
        assert!(e(json!({"model": "m", "input": "q", "tool_choice": {"type": "function", "name": "f"}})).contains("not among `tools`"));
        assert!(
            e(json!({"model": "m", "input": "q", "tool_choice": {"type": "file_search"}}))
                .contains("not among `tools`")
        );
        let p = parse(json!({"model": "m", "input": "q", "text": {"format": {"type": "json_schema", "name": "a", "schema": {"type": "object"}, "strict": true}}}).as_object().unwrap()).unwrap_or_else(|_| panic!());
        assert_eq!(
            p.response_format.unwrap(),
            json!({"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}, "strict": true}})
        );
    }
}
