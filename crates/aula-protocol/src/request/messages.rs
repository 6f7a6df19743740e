//! A chat request's `messages`: roles, content (text or text parts), and
//! the tool calls and results of earlier turns.

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
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_message(i, item))
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
    // An assistant turn that called tools: the calls as the JSON the model writes.
    if role == "assistant"
        && let Some(calls) = obj.get("tool_calls").filter(|c| !c.is_null())
    {
        let text = crate::tools::calls_as_text(calls)
            .map_err(|m| ApiError::invalid_param(&param, format!("{param}.{m}")))?;
        let before = match obj.get("content") {
            Some(Value::String(s)) if !s.is_empty() => format!("{s}\n"),
            _ => String::new(),
        };
        return Ok(ChatMessage {
            role,
            content: before + &text,
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
    Ok(ChatMessage { role, content })
}

/// A function's result, written as a user turn the model can read.
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
    let id = obj
        .get("tool_call_id")
        .and_then(Value::as_str)
        .unwrap_or("");
    Ok(ChatMessage {
        role: "user".into(),
        content: format!("Result of function call {id}:\n{content}"),
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
