//! `/v1/responses`: the Response object, its output items and the events
//! of a streamed one, as Aula answers them (a search of course material,
//! a chat's text, function calls). Fields OpenAI's description requires are
//! always written (`error`, `incomplete_details`, `previous_response_id`
//! as null when there is none); `usage` is left out until it is known.

use super::Role;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a Response stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseStatus {
    InProgress,
    Completed,
    /// Cut short (`max_output_tokens`).
    Incomplete,
    Failed,
}

/// Where an output item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    InProgress,
    /// A file search looking.
    Searching,
    Completed,
    Incomplete,
    Failed,
}

/// A Response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseObject {
    pub id: String,
    pub object: String,
    pub created_at: i64,
    pub status: ResponseStatus,
    pub error: Option<ResponseError>,
    pub incomplete_details: Option<IncompleteDetails>,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<u64>,
    pub model: String,
    pub output: Vec<OutputItem>,
    pub parallel_tool_calls: bool,
    pub previous_response_id: Option<String>,
    pub reasoning: Reasoning,
    pub store: bool,
    pub temperature: f64,
    pub top_p: f64,
    pub text: TextConfig,
    /// As the request gave it (a mode, or a named tool).
    pub tool_choice: Value,
    /// As the request gave them.
    pub tools: Vec<Value>,
    pub truncation: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<ResponseUsage>,
    pub metadata: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseError {
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncompleteDetails {
    pub reason: String,
}

/// A reasoning model's settings (Aula sets none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reasoning {
    pub effort: Option<String>,
    pub summary: Option<String>,
}

/// `text.format` as the request gave it (`text` when it gave none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    pub format: Value,
}

/// Tokens used, in the Responses API's names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseUsage {
    pub input_tokens: u64,
    pub input_tokens_details: InputTokensDetails,
    pub output_tokens: u64,
    pub output_tokens_details: OutputTokensDetails,
    pub total_tokens: u64,
}

impl ResponseUsage {
    pub fn new(input: u64, output: u64) -> ResponseUsage {
        ResponseUsage {
            input_tokens: input,
            output_tokens: output,
            total_tokens: input + output,
            ..ResponseUsage::default()
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputTokensDetails {
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputTokensDetails {
    pub reasoning_tokens: u64,
}

/// One output item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    Message {
        id: String,
        role: Role,
        status: ItemStatus,
        content: Vec<OutputContent>,
    },
    FileSearchCall {
        id: String,
        status: ItemStatus,
        queries: Vec<String>,
        /// Only with `include: ["file_search_call.results"]`.
        results: Option<Vec<SearchResult>>,
    },
    FunctionCall {
        id: String,
        status: ItemStatus,
        call_id: String,
        name: String,
        arguments: String,
    },
}

impl OutputItem {
    pub fn id(&self) -> &str {
        match self {
            OutputItem::Message { id, .. }
            | OutputItem::FileSearchCall { id, .. }
            | OutputItem::FunctionCall { id, .. } => id,
        }
    }
}

/// A part of a message's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputContent {
    OutputText {
        text: String,
        annotations: Vec<Annotation>,
        /// Aula reports none (an empty list: the description has no null).
        logprobs: Vec<Value>,
    },
}

impl OutputContent {
    pub fn text(text: impl Into<String>, annotations: Vec<Annotation>) -> OutputContent {
        OutputContent::OutputText {
            text: text.into(),
            annotations,
            logprobs: Vec::new(),
        }
    }
}

/// A citation of a file, at a character index of the text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Annotation {
    FileCitation {
        index: usize,
        file_id: String,
        filename: String,
    },
}

/// One result of a file search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResult {
    pub file_id: String,
    pub filename: String,
    pub score: f32,
    pub text: String,
    pub attributes: serde_json::Map<String, Value>,
}

/// One event of a streamed Response, numbered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResponseEvent {
    #[serde(flatten)]
    pub body: EventBody,
    pub sequence_number: u64,
}

impl ResponseEvent {
    /// The event as server-sent-event text: its type as the `event:` line.
    pub fn to_sse(&self) -> String {
        let data = serde_json::to_string(self).unwrap_or_default();
        format!("event: {}\ndata: {data}\n\n", self.body.kind())
    }
}

/// What a streamed Response's events say, by type.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum EventBody {
    #[serde(rename = "response.created")]
    Created { response: Box<ResponseObject> },
    #[serde(rename = "response.in_progress")]
    InProgress { response: Box<ResponseObject> },
    #[serde(rename = "response.completed")]
    Completed { response: Box<ResponseObject> },
    #[serde(rename = "response.incomplete")]
    Incomplete { response: Box<ResponseObject> },
    #[serde(rename = "response.failed")]
    Failed { response: Box<ResponseObject> },
    #[serde(rename = "response.output_item.added")]
    ItemAdded {
        output_index: usize,
        item: OutputItem,
    },
    #[serde(rename = "response.output_item.done")]
    ItemDone {
        output_index: usize,
        item: OutputItem,
    },
    #[serde(rename = "response.file_search_call.in_progress")]
    SearchInProgress {
        output_index: usize,
        item_id: String,
    },
    #[serde(rename = "response.file_search_call.searching")]
    Searching {
        output_index: usize,
        item_id: String,
    },
    #[serde(rename = "response.file_search_call.completed")]
    SearchCompleted {
        output_index: usize,
        item_id: String,
    },
    #[serde(rename = "response.content_part.added")]
    PartAdded {
        output_index: usize,
        item_id: String,
        content_index: usize,
        part: OutputContent,
    },
    #[serde(rename = "response.content_part.done")]
    PartDone {
        output_index: usize,
        item_id: String,
        content_index: usize,
        part: OutputContent,
    },
    #[serde(rename = "response.output_text.delta")]
    TextDelta {
        output_index: usize,
        item_id: String,
        content_index: usize,
        delta: String,
        logprobs: Vec<Value>,
    },
    #[serde(rename = "response.output_text.annotation.added")]
    AnnotationAdded {
        output_index: usize,
        item_id: String,
        content_index: usize,
        annotation_index: usize,
        annotation: Annotation,
    },
    #[serde(rename = "response.output_text.done")]
    TextDone {
        output_index: usize,
        item_id: String,
        content_index: usize,
        text: String,
        logprobs: Vec<Value>,
    },
    #[serde(rename = "response.function_call_arguments.delta")]
    ArgumentsDelta {
        output_index: usize,
        item_id: String,
        delta: String,
    },
    #[serde(rename = "response.function_call_arguments.done")]
    ArgumentsDone {
        output_index: usize,
        item_id: String,
        arguments: String,
    },
    #[serde(rename = "error")]
    Error {
        code: Option<String>,
        message: String,
        param: Option<String>,
    },
}

impl EventBody {
    /// The event's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::Created { .. } => "response.created",
            EventBody::InProgress { .. } => "response.in_progress",
            EventBody::Completed { .. } => "response.completed",
            EventBody::Incomplete { .. } => "response.incomplete",
            EventBody::Failed { .. } => "response.failed",
            EventBody::ItemAdded { .. } => "response.output_item.added",
            EventBody::ItemDone { .. } => "response.output_item.done",
            EventBody::SearchInProgress { .. } => "response.file_search_call.in_progress",
            EventBody::Searching { .. } => "response.file_search_call.searching",
            EventBody::SearchCompleted { .. } => "response.file_search_call.completed",
            EventBody::PartAdded { .. } => "response.content_part.added",
            EventBody::PartDone { .. } => "response.content_part.done",
            EventBody::TextDelta { .. } => "response.output_text.delta",
            EventBody::AnnotationAdded { .. } => "response.output_text.annotation.added",
            EventBody::TextDone { .. } => "response.output_text.done",
            EventBody::ArgumentsDelta { .. } => "response.function_call_arguments.delta",
            EventBody::ArgumentsDone { .. } => "response.function_call_arguments.done",
            EventBody::Error { .. } => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn items_and_events_carry_their_type() {
        let item = OutputItem::Message {
            id: "msg_1".into(),
            role: Role::Assistant,
            status: ItemStatus::Completed,
            content: vec![OutputContent::text(
                "Cells [1]",
                vec![Annotation::FileCitation {
                    index: 6,
                    file_id: "file-a".into(),
                    filename: "a.txt".into(),
                }],
            )],
        };
        let v = serde_json::to_value(&item).unwrap();
        assert_eq!(v["type"], "message");
        assert_eq!(v["content"][0]["type"], "output_text");
        assert_eq!(v["content"][0]["logprobs"], json!([]));
        assert_eq!(v["content"][0]["annotations"][0]["type"], "file_citation");
        let e = ResponseEvent {
            body: EventBody::ItemDone {
                output_index: 0,
                item,
            },
            sequence_number: 7,
        };
        let sse = e.to_sse();
        assert!(
            sse.starts_with("event: response.output_item.done\ndata: {"),
            "{sse}"
        );
        let data: Value =
            serde_json::from_str(sse.lines().nth(1).unwrap().strip_prefix("data: ").unwrap())
                .unwrap();
        assert_eq!(data["type"], e.body.kind());
        assert_eq!(data["sequence_number"], 7);
        let call = serde_json::to_value(OutputItem::FileSearchCall {
            id: "fs".into(),
            status: ItemStatus::Searching,
            queries: vec!["q".into()],
            results: None,
        })
        .unwrap();
        assert_eq!(call["status"], "searching");
        assert!(call.get("results").is_some_and(Value::is_null));
    }

    #[test]
    fn usage_details_are_always_written() {
        let u = serde_json::to_value(ResponseUsage::new(3, 4)).unwrap();
        assert_eq!(u["total_tokens"], 7);
        assert_eq!(u["input_tokens_details"]["cache_write_tokens"], 0);
        assert_eq!(u["output_tokens_details"]["reasoning_tokens"], 0);
    }
}
