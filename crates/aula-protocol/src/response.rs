//! The answers of Aula's engine, built from the typed wire shapes in
//! [`crate::wire`] (so they match what the gateway reads back and OpenAI's
//! published description), one builder per response sharing its id.

use crate::wire::{
    AnswerMessage, CallDelta, ChatChunk, ChatCompletion, Choice, ChunkChoice, Delta, FunctionCall,
    FunctionDelta, FunctionType, Role, TextChoice, TextCompletion, ToolCall,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    /// The answer is a function call (`tools`).
    ToolCalls,
    /// Another engine's filter cut the answer (never Aula's own engine).
    ContentFilter,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    #[serde(default)]
    pub total_tokens: u32,
}

impl Usage {
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// Which endpoint a response is for: it decides the object names and the
/// shape of each choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completion,
}

/// A whole answer of either endpoint.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Answer {
    Chat(ChatCompletion),
    Text(TextCompletion),
}

/// One streamed chunk of either endpoint; `to_string()` is its JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Chunk {
    Chat(ChatChunk),
    Text(TextCompletion),
}

impl std::fmt::Display for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        f.write_str(&text)
    }
}

/// Builds the bodies of one response (whole or streamed) with a shared id.
#[derive(Debug, Clone)]
pub struct ResponseBuilder {
    pub endpoint: Endpoint,
    pub id: String,
    pub model: String,
    pub created: u64,
}

impl ResponseBuilder {
    pub fn new(endpoint: Endpoint, model: &str) -> Self {
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completion => "cmpl",
        };
        let id = format!("{prefix}-{:016x}{:08x}", rand_u64(), created as u32);
        ResponseBuilder {
            endpoint,
            id,
            model: model.to_string(),
            created,
        }
    }

    /// The whole (non-streaming) response.
    pub fn full(&self, text: &str, finish: FinishReason, usage: Usage) -> Answer {
        match self.endpoint {
            Endpoint::Chat => self.chat_answer(
                AnswerMessage {
                    role: Role::Assistant,
                    content: Some(text.to_string()),
                    refusal: None,
                    tool_calls: Vec::new(),
                    reasoning_content: None,
                },
                finish,
                usage,
            ),
            Endpoint::Completion => {
                Answer::Text(self.text_completion(text, Some(finish), Some(usage)))
            }
        }
    }

    fn chat_answer(&self, message: AnswerMessage, finish: FinishReason, usage: Usage) -> Answer {
        Answer::Chat(ChatCompletion {
            id: self.id.clone(),
            object: "chat.completion".into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![Choice {
                index: 0,
                message,
                logprobs: None,
                finish_reason: finish,
            }],
            usage: Some(usage),
        })
    }

    fn text_completion(
        &self,
        text: &str,
        finish: Option<FinishReason>,
        usage: Option<Usage>,
    ) -> TextCompletion {
        TextCompletion {
            id: self.id.clone(),
            object: "text_completion".into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![TextChoice {
                index: 0,
                text: text.to_string(),
                logprobs: None,
                finish_reason: finish,
            }],
            usage,
        }
    }

    /// One streamed chunk carrying text (and, on the last one, the finish reason).
    /// For chat, `first` adds the assistant role to the delta.
    pub fn chunk(&self, text: &str, first: bool, finish: Option<FinishReason>) -> Chunk {
        match self.endpoint {
            Endpoint::Chat => {
                let content =
                    (first || finish.is_none() || !text.is_empty()).then(|| text.to_string());
                self.chat_chunk(
                    Delta {
                        content,
                        ..Delta::default()
                    },
                    first,
                    finish,
                )
            }
            Endpoint::Completion => Chunk::Text(self.text_completion(text, finish, None)),
        }
    }

    fn chat_chunk(&self, mut delta: Delta, first: bool, finish: Option<FinishReason>) -> Chunk {
        if first {
            delta.role = Some(Role::Assistant);
        }
        Chunk::Chat(ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason: finish,
            }],
            usage: None,
        })
    }

    fn call_id() -> String {
        format!("call_{:016x}", rand_u64())
    }

    /// The whole response of a chat answer read for tools: its calls (then
    /// `finish_reason` is `tool_calls`), any text, any reasoning.
    pub fn full_answer(
        &self,
        a: &crate::tool_parse::Parsed,
        finish: FinishReason,
        usage: Usage,
    ) -> Answer {
        let tool_calls: Vec<ToolCall> = a
            .calls
            .iter()
            .map(|(name, args)| ToolCall {
                id: Self::call_id(),
                kind: FunctionType::Function,
                function: FunctionCall {
                    name: name.clone(),
                    arguments: args.clone(),
                },
            })
            .collect();
        let finish = if tool_calls.is_empty() {
            finish
        } else {
            FinishReason::ToolCalls
        };
        self.chat_answer(
            AnswerMessage {
                role: Role::Assistant,
                content: a.content.clone(),
                refusal: None,
                tool_calls,
                reasoning_content: a.reasoning.clone(),
            },
            finish,
            usage,
        )
    }

    /// A call's opening delta: its index, id and name, and `arguments`.
    fn call_delta(index: usize, name: &str, arguments: &str) -> CallDelta {
        CallDelta {
            index: index as u32,
            id: Some(Self::call_id()),
            kind: Some(FunctionType::Function),
            function: FunctionDelta {
                name: Some(name.to_string()),
                arguments: Some(arguments.to_string()),
            },
        }
    }

    /// The streamed chunk of an answer read for tools (sent whole when the
    /// answer is over): reasoning, text, and every call with its index.
    pub fn answer_chunk(&self, a: &crate::tool_parse::Parsed) -> Chunk {
        let delta = Delta {
            role: None,
            content: a.content.clone(),
            reasoning_content: a.reasoning.clone(),
            tool_calls: a
                .calls
                .iter()
                .enumerate()
                .map(|(i, (n, args))| Self::call_delta(i, n, args))
                .collect(),
        };
        self.chat_chunk(delta, true, None)
    }

    /// A call's first streamed delta: its index, a new id, its name, and
    /// empty arguments (fragments follow in [`Self::call_args_chunk`]).
    pub fn call_start_chunk(&self, index: usize, name: &str, first: bool) -> Chunk {
        let delta = Delta {
            tool_calls: vec![Self::call_delta(index, name, "")],
            ..Delta::default()
        };
        self.chat_chunk(delta, first, None)
    }

    /// More of call `index`'s arguments.
    pub fn call_args_chunk(&self, index: usize, fragment: &str) -> Chunk {
        let delta = Delta {
            tool_calls: vec![CallDelta {
                index: index as u32,
                function: FunctionDelta {
                    name: None,
                    arguments: Some(fragment.to_string()),
                },
                ..CallDelta::default()
            }],
            ..Delta::default()
        };
        self.chat_chunk(delta, false, None)
    }

    /// Reasoning and/or content of an answer, as one delta.
    pub fn text_chunk(&self, content: Option<&str>, reasoning: Option<&str>, first: bool) -> Chunk {
        let delta = Delta {
            content: content.map(String::from),
            reasoning_content: reasoning.map(String::from),
            ..Delta::default()
        };
        self.chat_chunk(delta, first, None)
    }

    /// The final usage chunk of a stream (`stream_options.include_usage`).
    pub fn usage_chunk(&self, usage: Usage) -> Chunk {
        match self.endpoint {
            Endpoint::Chat => Chunk::Chat(ChatChunk {
                id: self.id.clone(),
                object: "chat.completion.chunk".into(),
                created: self.created,
                model: self.model.clone(),
                choices: Vec::new(),
                usage: Some(usage),
            }),
            Endpoint::Completion => Chunk::Text(TextCompletion {
                choices: Vec::new(),
                ..self.text_completion("", None, Some(usage))
            }),
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish()
}

/// The model list of `GET /v1/models`.
pub fn model_list(names: &[String], owned_by: &str) -> Value {
    let data: Vec<Value> = names
        .iter()
        .map(|n| json!({"id": n, "object": "model", "created": 0, "owned_by": owned_by}))
        .collect();
    json!({"object": "list", "data": data})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn v(x: impl Serialize) -> Value {
        serde_json::to_value(x).unwrap()
    }

    #[test]
    fn shapes() {
        let b = ResponseBuilder::new(Endpoint::Chat, "m");
        let full = v(b.full("hi", FinishReason::Length, Usage::new(3, 2)));
        assert_eq!(full["object"], "chat.completion");
        assert_eq!(full["choices"][0]["message"]["content"], "hi");
        // Required by OpenAI's description of a chat message: present, null.
        let message = full["choices"][0]["message"].as_object().unwrap();
        assert!(message.get("refusal").is_some_and(Value::is_null));
        assert!(
            full["choices"][0]
                .get("logprobs")
                .is_some_and(Value::is_null)
        );
        let answer = v(b.full_answer(
            &crate::tool_parse::Parsed::default(),
            FinishReason::Stop,
            Usage::new(1, 1),
        ));
        let message = answer["choices"][0]["message"].as_object().unwrap();
        assert!(message.get("refusal").is_some_and(Value::is_null));
        assert_eq!(full["choices"][0]["finish_reason"], "length");
        assert_eq!(full["usage"]["total_tokens"], 5);
        let c = v(b.chunk("a", true, None));
        assert_eq!(c["choices"][0]["delta"]["role"], "assistant");
        assert!(c["choices"][0]["finish_reason"].is_null());
        assert!(c.get("usage").is_none());
        // The last chunk: an empty delta and the reason.
        let last = v(b.chunk("", false, Some(FinishReason::ToolCalls)));
        assert_eq!(last["choices"][0]["delta"], json!({}));
        assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");
        let u = v(b.usage_chunk(Usage::new(1, 1)));
        assert_eq!(u["choices"].as_array().map(Vec::len), Some(0));
        assert_eq!(u["usage"]["total_tokens"], 2);
        let t = v(ResponseBuilder::new(Endpoint::Completion, "m").full(
            "x",
            FinishReason::Stop,
            Usage::default(),
        ));
        assert_eq!(t["object"], "text_completion");
        assert_eq!(t["choices"][0]["text"], "x");
        assert!(b.id.starts_with("chatcmpl-"));
        // `to_string()` is the chunk's JSON.
        let text: Value = serde_json::from_str(&b.chunk("a", false, None).to_string()).unwrap();
        assert_eq!(text["choices"][0]["delta"], json!({"content": "a"}));
    }

    #[test]
    fn streamed_calls_read_back_as_the_calls() {
        let b = ResponseBuilder::new(Endpoint::Chat, "m");
        let mut calls = crate::wire::CallAssembler::default();
        for c in [
            b.call_start_chunk(0, "add", true),
            b.call_args_chunk(0, "{\"a\":"),
            b.call_args_chunk(0, " 1}"),
        ] {
            let c: crate::wire::ChatChunk = serde_json::from_str(&c.to_string()).unwrap();
            calls.push(&c.choices[0].delta.tool_calls);
        }
        let calls = calls.finish();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].function.name, "add");
        assert_eq!(calls[0].function.arguments, "{\"a\": 1}");
        assert!(calls[0].id.starts_with("call_"));
    }
}
