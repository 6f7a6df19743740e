//! Response shapes of the OpenAI API, built with `serde_json` so the field
//! names are visible in one place.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    Stop,
    Length,
    /// The answer is a function call (`tools`).
    #[serde(rename = "tool_calls")]
    ToolCalls,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
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
    pub fn full(&self, text: &str, finish: FinishReason, usage: Usage) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": null},
                "logprobs": null,
                "finish_reason": finish.as_str(),
            }),
            Endpoint::Completion => json!({
                "index": 0, "text": text, "logprobs": null, "finish_reason": finish.as_str(),
            }),
        };
        json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage,
        })
    }

    /// One streamed chunk carrying text (and, on the last one, the finish reason).
    /// For chat, `first` adds the assistant role to the delta.
    pub fn chunk(&self, text: &str, first: bool, finish: Option<FinishReason>) -> Value {
        let choice = match self.endpoint {
            Endpoint::Chat => {
                let delta = if first {
                    json!({"role": "assistant", "content": text})
                } else if finish.is_some() && text.is_empty() {
                    json!({})
                } else {
                    json!({"content": text})
                };
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish.map(FinishReason::as_str)})
            }
            Endpoint::Completion => json!({
                "index": 0, "text": text, "logprobs": null, "finish_reason": finish.map(FinishReason::as_str),
            }),
        };
        json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        })
    }

    fn tool_call(&self, name: &str, arguments: &str, index: Option<usize>) -> Value {
        let mut call = json!({
            "id": format!("call_{:016x}", rand_u64()),
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        });
        if let Some(i) = index {
            call["index"] = json!(i);
        }
        call
    }

    /// The whole response of a chat answer read for tools: its calls (then
    /// `finish_reason` is `tool_calls`), any text, any reasoning.
    pub fn full_answer(
        &self,
        a: &crate::tool_parse::Parsed,
        finish: FinishReason,
        usage: Usage,
    ) -> Value {
        // `refusal` is required in OpenAI's description of a chat message
        // (null: this engine never refuses on its own).
        let mut message = json!({"role": "assistant", "content": a.content, "refusal": null});
        if let Some(r) = &a.reasoning {
            message["reasoning_content"] = json!(r);
        }
        let finish = if a.calls.is_empty() {
            finish
        } else {
            let calls: Vec<Value> = a
                .calls
                .iter()
                .map(|(n, args)| self.tool_call(n, args, None))
                .collect();
            message["tool_calls"] = json!(calls);
            FinishReason::ToolCalls
        };
        json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": finish.as_str(),
            }],
            "usage": usage,
        })
    }

    /// The streamed chunk of an answer read for tools (sent whole when the
    /// answer is over): reasoning, text, and every call with its index.
    pub fn answer_chunk(&self, a: &crate::tool_parse::Parsed) -> Value {
        let mut delta = json!({"role": "assistant", "content": a.content});
        if let Some(r) = &a.reasoning {
            delta["reasoning_content"] = json!(r);
        }
        if !a.calls.is_empty() {
            let calls: Vec<Value> = a
                .calls
                .iter()
                .enumerate()
                .map(|(i, (n, args))| self.tool_call(n, args, Some(i)))
                .collect();
            delta["tool_calls"] = json!(calls);
        }
        json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": null,
            }],
        })
    }

    /// A chat chunk with this delta (and the assistant's role on the first).
    fn delta_chunk(&self, mut delta: Value, first: bool) -> Value {
        if first {
            delta["role"] = json!("assistant");
        }
        json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}],
        })
    }

    /// A call's first streamed delta: its index, a new id, its name, and
    /// empty arguments (fragments follow in [`Self::call_args_chunk`]).
    pub fn call_start_chunk(&self, index: usize, name: &str, first: bool) -> Value {
        let call = self.tool_call(name, "", Some(index));
        self.delta_chunk(json!({"content": null, "tool_calls": [call]}), first)
    }

    /// More of call `index`'s arguments.
    pub fn call_args_chunk(&self, index: usize, fragment: &str) -> Value {
        self.delta_chunk(
            json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}),
            false,
        )
    }

    /// Reasoning and/or content of an answer, as one delta.
    pub fn text_chunk(&self, content: Option<&str>, reasoning: Option<&str>, first: bool) -> Value {
        let mut delta = json!({});
        if let Some(r) = reasoning {
            delta["reasoning_content"] = json!(r);
        }
        if let Some(c) = content {
            delta["content"] = json!(c);
        }
        self.delta_chunk(delta, first)
    }

    /// The final usage chunk of a stream (`stream_options.include_usage`).
    pub fn usage_chunk(&self, usage: Usage) -> Value {
        json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        })
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.endpoint, chunk) {
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Completion, _) => "text_completion",
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
    use super::*;

    #[test]
    fn shapes() {
        let b = ResponseBuilder::new(Endpoint::Chat, "m");
        let full = b.full("hi", FinishReason::Length, Usage::new(3, 2));
        assert_eq!(full["object"], "chat.completion");
        assert_eq!(full["choices"][0]["message"]["content"], "hi");
        // Required by OpenAI's description of a chat message: present, null.
        let message = full["choices"][0]["message"].as_object().unwrap();
        assert!(message.get("refusal").is_some_and(Value::is_null));
        let answer = b.full_answer(
            &crate::tool_parse::Parsed::default(),
            FinishReason::Stop,
            Usage::new(1, 1),
        );
        let message = answer["choices"][0]["message"].as_object().unwrap();
        assert!(message.get("refusal").is_some_and(Value::is_null));
        assert_eq!(full["choices"][0]["finish_reason"], "length");
        assert_eq!(full["usage"]["total_tokens"], 5);
        let c = b.chunk("a", true, None);
        assert_eq!(c["choices"][0]["delta"]["role"], "assistant");
        assert!(c["choices"][0]["finish_reason"].is_null());
        let u = b.usage_chunk(Usage::new(1, 1));
        assert_eq!(u["choices"].as_array().map(Vec::len), Some(0));
        let t = ResponseBuilder::new(Endpoint::Completion, "m").full(
            "x",
            FinishReason::Stop,
            Usage::default(),
        );
        assert_eq!(t["object"], "text_completion");
        assert_eq!(t["choices"][0]["text"], "x");
        assert!(b.id.starts_with("chatcmpl-"));
    }
}
