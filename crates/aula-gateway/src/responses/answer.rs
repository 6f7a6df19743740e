//! The pieces of a Response: its output items and the object around them,
//! typed (`aula_protocol::wire`).

use super::*;
use aula_protocol::wire::{
    IncompleteDetails, ItemStatus, OutputContent, OutputItem, Reasoning, ResponseError,
    ResponseObject, ResponseStatus, ResponseUsage, SearchResult, TextConfig, ToolCall,
};

/// A chat call as a Responses `function_call` output item.
pub(super) fn function_call_out(c: &ToolCall, status: ItemStatus) -> OutputItem {
    OutputItem::FunctionCall {
        id: format!("fc_{}", crate::random_id(24)),
        status,
        call_id: c.id.clone(),
        name: c.function.name.clone(),
        arguments: c.function.arguments.clone(),
    }
}

/// The `file_search_call` item; its results only when asked for and done.
pub(super) fn search_item(
    id: &str,
    p: &Parsed,
    results: &[crate::rag::search::Found],
    status: ItemStatus,
) -> OutputItem {
    let results = (p.include_results && status == ItemStatus::Completed).then(|| {
        results
            .iter()
            .map(|f| SearchResult {
                file_id: f.file_id.clone(),
                filename: f.filename.clone(),
                score: f.score,
                text: f.text.clone(),
                attributes: f.attributes.clone(),
            })
            .collect()
    });
    OutputItem::FileSearchCall {
        id: id.to_string(),
        status,
        queries: vec![p.question.clone()],
        results,
    }
}

pub(super) fn message_item(
    id: &str,
    text: &str,
    annotations: Vec<Annotation>,
    status: ItemStatus,
) -> OutputItem {
    OutputItem::Message {
        id: id.to_string(),
        role: Role::Assistant,
        status,
        content: vec![OutputContent::text(text, annotations)],
    }
}

/// What every state of one Response repeats: its id, time, model and the
/// request's settings, echoed.
pub(super) struct Shell {
    pub(super) id: String,
    pub(super) created_at: i64,
    pub(super) model: String,
    pub(super) p_instructions: Option<String>,
    pub(super) max_output_tokens: Option<u64>,
    pub(super) temperature: Option<f64>,
    pub(super) top_p: Option<f64>,
    pub(super) tools: Vec<Value>,
    pub(super) tool_choice: Value,
    pub(super) metadata: Value,
    pub(super) text_format: Value,
}

/// How a Response ended (or that it has not yet).
pub(super) enum Ending {
    Running,
    Completed,
    /// Cut by `max_output_tokens`.
    Cut,
    Failed(ResponseError),
}

impl Shell {
    /// The Response object; `usage` left out while it is not known (OpenAI's
    /// description has no null for it).
    pub(super) fn object(
        &self,
        ending: Ending,
        output: Vec<OutputItem>,
        usage: Option<ResponseUsage>,
    ) -> ResponseObject {
        let (status, error, incomplete_details) = match ending {
            Ending::Running => (ResponseStatus::InProgress, None, None),
            Ending::Completed => (ResponseStatus::Completed, None, None),
            Ending::Cut => (
                ResponseStatus::Incomplete,
                None,
                Some(IncompleteDetails {
                    reason: "max_output_tokens".into(),
                }),
            ),
            Ending::Failed(e) => (ResponseStatus::Failed, Some(e), None),
        };
        ResponseObject {
            id: self.id.clone(),
            object: "response".into(),
            created_at: self.created_at,
            status,
            error,
            incomplete_details,
            instructions: self.p_instructions.clone(),
            max_output_tokens: self.max_output_tokens,
            model: self.model.clone(),
            output,
            parallel_tool_calls: true,
            previous_response_id: None,
            reasoning: Reasoning::default(),
            store: false,
            temperature: self.temperature.unwrap_or(1.0),
            top_p: self.top_p.unwrap_or(1.0),
            text: TextConfig {
                format: self.text_format.clone(),
            },
            tool_choice: self.tool_choice.clone(),
            tools: self.tools.clone(),
            truncation: "disabled".into(),
            usage,
            metadata: self.metadata.clone(),
        }
    }
}
