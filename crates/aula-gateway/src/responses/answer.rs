//! The pieces of a Response: its output items, the object around them, usage.

use super::*;
use serde_json::{Value, json};

/// A chat call as a Responses `function_call` output item.
pub(super) fn function_call_out(c: &aula_protocol::wire::ToolCall) -> Value {
    json!({
        "id": format!("fc_{}", crate::random_id(24)),
        "type": "function_call",
        "status": "completed",
        "call_id": c.id,
        "name": c.function.name,
        "arguments": c.function.arguments,
    })
}

pub(super) fn search_item(
    id: &str,
    p: &Parsed,
    results: &[crate::rag::search::Found],
    status: &str,
) -> Value {
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

pub(super) fn message_item(id: &str, text: &str, annotations: Vec<Value>, status: &str) -> Value {
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": annotations, "logprobs": []}],
    })
}

pub(super) struct Shell {
    pub(super) id: String,
    pub(super) created_at: i64,
    pub(super) model: String,
    pub(super) p_instructions: Option<String>,
    pub(super) max_output_tokens: Option<u64>,
    pub(super) temperature: Option<f64>,
    pub(super) top_p: Option<f64>,
    pub(super) tools: Value,
    pub(super) tool_choice: Value,
    pub(super) metadata: Value,
    pub(super) text_format: Value,
}

impl Shell {
    /// The Response object; `usage` left out while it is not known (OpenAI's
    /// description has no null for it).
    pub(super) fn object(
        &self,
        status: &str,
        output: Vec<Value>,
        usage: Value,
        incomplete: Value,
    ) -> Value {
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

pub(super) fn usage(prompt: u64, completion: u64) -> Value {
    json!({
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    })
}
