//! A chat request's `messages`: roles, content (text or text parts), and
//! the tool calls and results of earlier turns.
//!
//! Rules: an assistant's `tool_calls` need an `id`, a `function.name` and
//! `function.arguments` that are a JSON object (as a string, as OpenAI sends
//! them, or an object); a `tool` message needs the `tool_call_id` of a call
//! made earlier in the conversation. Calls and results are kept as data for
//! templates that know tools; [`plain`] writes them as text for those that
//! do not.

use super::ChatMessage;
use crate::ApiError;
use serde_json::Value;

pub(super) fn parse_messages(v: Option<&Value>) -> Result<Vec<ChatMessage>, ApiError> {
    let items = match v {
        Some(Value::Array(items)) => items,
        None | Some(Value::Null) => {
            return Err(ApiError::invalid_param(
                "messages",
                "`messages` is required",
            ));
        }
        Some(_) => {
            return Err(ApiError::invalid_param(
                "messages",
                "`messages` must be a list",
            ));
        }
    };
    if items.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "`messages` must contain at least one message",
        ));
    }
    let mut out: Vec<ChatMessage> = Vec::with_capacity(items.len());
    // Each earlier call's id and function name.
    let mut calls: std::collections::HashMap<String, String> = Default::default();
    for (i, item) in items.iter().enumerate() {
        let mut m = parse_message(i, item)?;
        if m.role == "tool" {
            // The result must answer a call made earlier.
            let id = m.tool_call_id.clone().unwrap_or_default();
            let name = calls.get(&id).ok_or_else(|| {
                ApiError::invalid_param(
                    &format!("messages[{i}]"),
                    format!(
                        "messages[{i}]: tool_call_id `{id}` answers no tool call of an earlier assistant message"
                    ),
                )
            })?;
            m.name = Some(name.clone());
        }
        for c in &m.tool_calls {
            if let (Some(id), Some(name)) = (c["id"].as_str(), c["function"]["name"].as_str()) {
                calls.insert(id.to_string(), name.to_string());
            }
        }
        out.push(m);
    }
    Ok(out)
}

/// The conversation for a template that knows no tools: calls written as
/// the JSON objects the model is asked to produce, results as user turns.
pub fn plain(messages: &[ChatMessage]) -> Vec<ChatMessage> {
    messages
        .iter()
        .map(|m| {
            if m.role == "tool" {
                let id = m.tool_call_id.as_deref().unwrap_or("");
                return ChatMessage::text(
                    "user",
                    format!("Result of function call {id}:\n{}", m.content),
                );
            }
            if m.tool_calls.is_empty() {
                return m.clone();
            }
            let calls: Vec<String> = m
                .tool_calls
                .iter()
                .map(|c| {
                    serde_json::json!({"name": c["function"]["name"], "arguments": c["function"]["arguments"]})
                        .to_string()
                })
                .collect();
            let before = if m.content.is_empty() {
                String::new()
            } else {
                format!("{}\n", m.content)
            };
            ChatMessage::text(&m.role, before + &calls.join("\n"))
        })
        .collect()
}

/// One message: a system, user or assistant turn (an assistant's tool
/// calls written as the JSON the model writes), or a tool's result.
fn parse_message(i: usize, item: &Value) -> Result<ChatMessage, ApiError> {
    let param = format!("messages[{i}]");
    let obj = item
        .as_object()
        .ok_or_else(|| ApiError::invalid_param(&param, format!("{param} must be an object")))?;
    let role = match obj.get("role") {
        Some(Value::String(r)) => r.as_str(),
        _ => {
            return Err(ApiError::invalid_param(
                &param,
                format!("{param}.role must be a string"),
            ));
        }
    };
    let role = match role {
        "system" | "user" | "assistant" => role.to_string(),
        "developer" => "system".to_string(),
        "tool" => return tool_result(obj, &param),
        "function" => {
            return Err(ApiError::invalid_param(
                &param,
                format!("{param}: the deprecated `function` role is not supported; use `tool`"),
            ));
        }
        other => {
            return Err(ApiError::invalid_param(
                &param,
                format!("{param}.role `{other}` is not one of system, developer, user, assistant"),
            ));
        }
    };
    // An assistant turn that called tools.
    if role == "assistant"
        && let Some(calls) = obj.get("tool_calls").filter(|c| !c.is_null())
    {
        let tool_calls = crate::tools::parse_calls(calls)
            .map_err(|m| ApiError::invalid_param(&param, format!("{param}.{m}")))?;
        let content = match obj.get("content") {
            None | Some(Value::Null) => String::new(),
            v => text_content(v, &param)?,
        };
        return Ok(ChatMessage {
            tool_calls,
            ..ChatMessage::text(&role, content)
        });
    }
    for key in obj.keys() {
        if !matches!(key.as_str(), "role" | "content" | "name" | "tool_calls") {
            return Err(ApiError::invalid_param(
                &param,
                format!("{param}.{key} is not supported"),
            ));
        }
    }
    let content = text_content(obj.get("content"), &param)?;
    Ok(ChatMessage::text(&role, content))
}

/// A function's result.
fn tool_result(obj: &serde_json::Map<String, Value>, param: &str) -> Result<ChatMessage, ApiError> {
    let content = match obj.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<String>(),
        _ => {
            return Err(ApiError::invalid_param(
                param,
                format!("{param}.content must be the tool's result as a string"),
            ));
        }
    };
    let id = match obj.get("tool_call_id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        _ => {
            return Err(ApiError::invalid_param(
                param,
                format!("{param}.tool_call_id is required: the id of the call this answers"),
            ));
        }
    };
    Ok(ChatMessage {
        tool_call_id: Some(id),
        ..ChatMessage::text("tool", content)
    })
}

/// A message's content: a string, or a list of text parts.
fn text_content(v: Option<&Value>, param: &str) -> Result<String, ApiError> {
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match (
                    part.get("type").and_then(Value::as_str),
                    part.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    _ => {
                        return Err(ApiError::invalid_param(
                            param,
                            format!("{param}: only text content parts are supported"),
                        ));
                    }
                }
            }
            Ok(text)
        }
        None | Some(Value::Null) => Err(ApiError::invalid_param(
            param,
            format!("{param}.content is required"),
        )),
        Some(_) => Err(ApiError::invalid_param(
            param,
            format!("{param}.content must be a string"),
        )),
    }
}
