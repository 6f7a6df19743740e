//! `/v1/chat/completions` (and `/v1/completions`' answers): the request the
//! gateway makes itself, the whole answer, and a streamed chunk.

use super::is_false;
use crate::{FinishReason, Usage};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Who speaks a turn. `developer` is the newer name of `system`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

/// The `type` of a tool, a tool call and a named tool choice: only
/// functions exist in the chat API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FunctionType {
    #[default]
    Function,
}

/// A chat completion request, as the gateway makes it for a user (it then
/// passes the same validation, limits, queue and ledger as the user's own
/// calls).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Turn>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub stream: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// The caller's format (`json_object`, `json_schema` with its schema),
    /// passed on for the chat API to validate and enforce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<FunctionTool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
}

impl ChatRequest {
    /// Stream this request, with the final usage chunk.
    pub fn streamed(mut self) -> Self {
        self.stream = true;
        self.stream_options = Some(StreamOptions {
            include_usage: true,
        });
        self
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// One message of a chat request: text, an assistant's calls, or a call's
/// result (`tool`, with the call's id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub role: Role,
    /// Null only for an assistant turn that is all calls.
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Turn {
    /// A text turn.
    pub fn text(role: Role, content: impl Into<String>) -> Turn {
        Turn {
            role,
            content: Some(content.into()),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// An assistant turn that made these calls.
    pub fn calls(calls: Vec<ToolCall>) -> Turn {
        Turn {
            role: Role::Assistant,
            content: None,
            tool_calls: calls,
            tool_call_id: None,
        }
    }

    /// The result of call `call_id`.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Turn {
        Turn {
            role: Role::Tool,
            content: Some(content.into()),
            tool_calls: Vec::new(),
            tool_call_id: Some(call_id.into()),
        }
    }
}

/// A function the model may call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionTool {
    #[serde(rename = "type")]
    pub kind: FunctionType,
    pub function: FunctionDef,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The arguments' JSON Schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `tool_choice`: a mode, or one function by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(ToolMode),
    Named(NamedTool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolMode {
    None,
    Auto,
    Required,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedTool {
    #[serde(rename = "type")]
    pub kind: FunctionType,
    pub function: FunctionName,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionName {
    pub name: String,
}

impl ToolChoice {
    /// Call the function `name`.
    pub fn function(name: impl Into<String>) -> ToolChoice {
        ToolChoice::Named(NamedTool {
            kind: FunctionType::Function,
            function: FunctionName { name: name.into() },
        })
    }
}

/// A call the model made: the function's name and its arguments as a JSON
/// text (as the model wrote them; the caller parses them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default)]
    pub kind: FunctionType,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

/// A whole chat answer (`object: "chat.completion"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl ChatCompletion {
    /// The first choice's text ("" when it only made calls).
    pub fn text(&self) -> &str {
        self.choices
            .first()
            .and_then(|c| c.message.content.as_deref())
            .unwrap_or("")
    }
}

/// One choice of a whole chat answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub index: u32,
    pub message: AnswerMessage,
    /// Required and nullable in the description; Aula reports none.
    #[serde(default)]
    pub logprobs: Option<Value>,
    pub finish_reason: FinishReason,
}

/// The assistant's message of a whole answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerMessage {
    pub role: Role,
    /// Null when the answer is only calls.
    #[serde(default)]
    pub content: Option<String>,
    /// Required (null: Aula's engine never refuses on its own).
    #[serde(default)]
    pub refusal: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// A reasoning model's thinking, apart from the answer (vLLM's and
    /// llama-server's name for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
}

/// One streamed chunk (`object: "chat.completion.chunk"`). The usage chunk
/// has no choices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    #[serde(default)]
    pub logprobs: Option<Value>,
    /// Null until the last chunk of the choice (OpenAI's service sends the
    /// null, though its description marks the field non-nullable).
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
}

/// What a chunk adds to the message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<CallDelta>,
}

/// A piece of a streamed call: the first names it (id, name), later ones
/// with the same `index` add to its arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallDelta {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<FunctionType>,
    #[serde(default)]
    pub function: FunctionDelta,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// Streamed calls assembled as OpenAI's own client does: a delta with a new
/// `index` starts a call, later ones with that index add to its arguments
/// (and may set its id and name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallAssembler {
    calls: Vec<(u32, ToolCall)>,
}

impl CallAssembler {
    pub fn push(&mut self, deltas: &[CallDelta]) {
        for d in deltas {
            let i = match self.calls.iter().position(|(i, _)| *i == d.index) {
                Some(i) => i,
                None => {
                    self.calls.push((d.index, ToolCall::default()));
                    self.calls.len() - 1
                }
            };
            let c = &mut self.calls[i].1;
            if let Some(id) = &d.id {
                c.id.clone_from(id);
            }
            if let Some(n) = &d.function.name {
                c.function.name.clone_from(n);
            }
            if let Some(a) = &d.function.arguments {
                c.function.arguments.push_str(a);
            }
        }
    }

    /// The calls, in the order they started.
    pub fn finish(self) -> Vec<ToolCall> {
        self.calls.into_iter().map(|(_, c)| c).collect()
    }
}

/// A whole text completion (`/v1/completions`, `object: "text_completion"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextCompletion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<TextChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// A text completion's choice; streamed chunks carry the same shape with
/// `finish_reason` null until the last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextChoice {
    pub index: u32,
    pub text: String,
    #[serde(default)]
    pub logprobs: Option<Value>,
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn a_request_leaves_out_what_it_does_not_set() {
        let r = ChatRequest {
            model: "m".into(),
            messages: vec![
                Turn::text(Role::User, "q"),
                Turn::calls(vec![ToolCall {
                    id: "c".into(),
                    kind: FunctionType::Function,
                    function: FunctionCall {
                        name: "f".into(),
                        arguments: "{}".into(),
                    },
                }]),
                Turn::tool_result("c", "4"),
            ],
            tool_choice: Some(ToolChoice::function("f")),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"model": "m", "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "content": "4", "tool_call_id": "c"},
            ], "tool_choice": {"type": "function", "function": {"name": "f"}}})
        );
        let s = serde_json::to_value(r.streamed()).unwrap();
        assert_eq!(s["stream"], true);
        assert_eq!(s["stream_options"]["include_usage"], true);
        assert_eq!(
            serde_json::to_value(ToolChoice::Mode(ToolMode::Required)).unwrap(),
            json!("required")
        );
    }

    #[test]
    fn an_answer_reads_and_writes_the_required_nulls() {
        let v = json!({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}});
        let a: ChatCompletion = serde_json::from_value(v).unwrap();
        assert_eq!(a.text(), "hi");
        let back = serde_json::to_value(&a).unwrap();
        let m = back["choices"][0]["message"].as_object().unwrap();
        assert!(m.get("refusal").is_some_and(Value::is_null));
        assert!(
            back["choices"][0]
                .get("logprobs")
                .is_some_and(Value::is_null)
        );
        assert!(m.get("tool_calls").is_none());
    }

    #[test]
    fn streamed_call_pieces_become_calls() {
        let piece = |v: Value| -> Vec<CallDelta> { serde_json::from_value(v).unwrap() };
        let mut a = CallAssembler::default();
        a.push(&piece(
            json!([{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]),
        ));
        for p in ["{\"city\"", ": \"Oslo\"", "}"] {
            a.push(&piece(json!([{"index": 0, "function": {"arguments": p}}])));
        }
        a.push(&piece(
            json!([{"index": 1, "id": "call_2", "type": "function", "function": {"name": "add", "arguments": "{}"}}]),
        ));
        let calls = a.finish();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].id, "call_1");
        assert_eq!(calls[0].function.name, "get_weather");
        assert_eq!(calls[0].function.arguments, "{\"city\": \"Oslo\"}");
        assert_eq!(calls[1].function.name, "add");
    }
}
