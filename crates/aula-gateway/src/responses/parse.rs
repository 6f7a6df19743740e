//! A Responses request read and checked: every field taken, or a 400 naming it.

use aula_protocol::ApiError;
use aula_protocol::wire::{
    FunctionCall, FunctionDef, FunctionTool, FunctionType, Role, ToolCall, ToolChoice, ToolMode,
    Turn,
};
use serde_json::{Map, Value, json};

pub(super) const FIELDS: &[&str] = &[
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

pub(super) struct FileSearch {
    pub(super) stores: Vec<String>,
    pub(super) params: crate::rag::api::SearchParams,
    pub(super) tool: Value,
}

pub(super) struct Parsed {
    pub(super) model: String,
    pub(super) messages: Vec<Turn>,
    pub(super) question: String,
    pub(super) instructions: Option<String>,
    pub(super) max_output_tokens: Option<u64>,
    pub(super) temperature: Option<f64>,
    pub(super) top_p: Option<f64>,
    pub(super) stream: bool,
    pub(super) search: Option<FileSearch>,
    pub(super) include_results: bool,
    pub(super) tool_choice: Value,
    pub(super) metadata: Value,
    /// `text.format` as given (echoed), and the chat `response_format` it is.
    pub(super) text_format: Value,
    pub(super) response_format: Option<Value>,
    /// Function tools in the chat API's shape, and its `tool_choice`.
    pub(super) functions: Vec<FunctionTool>,
    pub(super) chat_tool_choice: Option<ToolChoice>,
}

/// An input `function_call` item as a chat call.
pub(super) fn function_call_in(m: &Value, param: &str) -> Result<ToolCall, ApiError> {
    let field = |k: &str| {
        m.get(k)
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| bad(param, format!("a function_call needs a string `{k}`")))
    };
    Ok(ToolCall {
        id: field("call_id")?,
        kind: FunctionType::Function,
        function: FunctionCall {
            name: field("name")?,
            arguments: field("arguments")?,
        },
    })
}

/// A Responses `function` tool (flat) as the chat API's.
fn function_tool(to: &Map<String, Value>, param: &str) -> Result<FunctionTool, ApiError> {
    let name = to
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(param, "a function tool needs a string `name`"))?;
    let description = match to.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) => Some(d.clone()),
        Some(_) => {
            return Err(bad(
                param,
                "a function tool's `description` must be a string",
            ));
        }
    };
    let strict = match to.get("strict") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(bad(param, "a function tool's `strict` must be a boolean")),
    };
    Ok(FunctionTool {
        kind: FunctionType::Function,
        function: FunctionDef {
            name: name.to_string(),
            description,
            // The chat API validates the schema.
            parameters: to.get("parameters").filter(|v| !v.is_null()).cloned(),
            strict,
        },
    })
}

/// `text: {"format": ...}`: `text` (the default), `json_object`, or
/// `json_schema` with `name`, `schema`, `strict` — the chat API's
/// `response_format`, flattened as the Responses API writes it.
pub(super) fn text_format(o: &Map<String, Value>) -> Result<(Value, Option<Value>), ApiError> {
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

pub(super) fn bad(param: &str, m: impl Into<String>) -> ApiError {
    ApiError::invalid_param(param, m)
}

pub(super) fn text_of(content: &Value, param: &str) -> Result<String, ApiError> {
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

pub(super) fn parse(o: &Map<String, Value>) -> Result<Parsed, ApiError> {
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
            messages.push(Turn::text(Role::User, s.clone()));
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
                                if last.role == Role::Assistant && !last.tool_calls.is_empty() =>
                            {
                                last.tool_calls.push(call);
                            }
                            _ => messages.push(Turn::calls(vec![call])),
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
                        messages.push(Turn::tool_result(call_id, output));
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
                    "user" => Role::User,
                    "assistant" => Role::Assistant,
                    "system" | "developer" => Role::System,
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
                if role == Role::User {
                    question = text.clone();
                }
                messages.push(Turn::text(role, text));
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
    let mut functions: Vec<FunctionTool> = Vec::new();
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
                        functions.push(function_tool(to, &param)?);
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
            .any(|f| Some(f.function.name.as_str()) == tool_choice["name"].as_str())
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
            Value::String(s) if s == "required" && search.is_none() => {
                ToolChoice::Mode(ToolMode::Required)
            }
            Value::String(s) if s == "none" => ToolChoice::Mode(ToolMode::None),
            v if v["type"] == "function" => {
                ToolChoice::function(v["name"].as_str().unwrap_or_default())
            }
            _ => ToolChoice::Mode(ToolMode::Auto),
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
