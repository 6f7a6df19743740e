//! Aula's OpenAI protocol: request parsing and validation, response shapes,
//! and the one error type of the request path (mapped to HTTP in one place).
//!
//! `request/` reads chat and completion requests (with `response_format`),
//! `tools.rs` function calling, `tool_parse.rs` calls in the formats models
//! write, `tool_stream.rs` streams them as OpenAI does, `embeddings.rs`;
//! [`wire`] holds the typed requests and answers the engine writes and the
//! gateway reads (chat, embeddings, `/tokenize`, Responses); `response.rs`
//! builds the engine's answers from them; [`sse`] is the one SSE reader;
//! [`template`] chat templates; [`admin`] the admin API's types; `error.rs`
//! `ApiError` (its axum response behind the `axum` feature).

pub mod admin;
mod embeddings;
mod error;
pub mod reasoning;
mod request;
mod response;
pub mod sse;
pub mod template;
pub mod tool_parse;
pub mod tool_stream;
mod tools;
pub mod wire;

pub use embeddings::{
    EmbedInput, EmbeddingRequest, MAX_EMBED_INPUTS, Truncate, embeddings_response,
    parse_embeddings, parse_embeddings_object,
};
pub use error::ApiError;
pub use request::{
    Admission, BACKLOG_FIELD, ChatMessage, GenerateRequest, MAX_SCHEMA_BYTES, MAX_TOKENS_BOUND,
    Prompt, ResponseFormat, SamplingParams, admission_of, parse_chat, parse_chat_object,
    parse_completion, parse_completion_object, peek_admission, peek_route, plain_messages,
};
pub use response::*;
pub use tools::{MAX_TOOLS, Tool, ToolChoice, ToolSpec, parse_calls, parse_tools};
