//! Typed wire shapes of the OpenAI API as Aula sends and reads them: the
//! requests the gateway makes on a user's behalf (the chat behind
//! `/v1/responses`, a vector store's embeddings and token counts), the
//! answers engines give, whole and streamed, and the Responses API's own
//! objects and events. Each type serialises to what
//! OpenAI's published description (openai/openai-openapi) requires:
//! required fields present (a chat message's `refusal`, a choice's
//! `logprobs`, both null when there is none), optional ones left out rather
//! than sent as null. Reading is lenient where engines differ (missing
//! optional fields default), strict where Aula relies on a value.
//!
//! The engine builds its answers from these types (`ResponseBuilder`) and
//! the gateway reads them back with the same ones, so the two cannot drift.

mod chat;
mod embeddings;
mod responses;
mod tokenize;

pub use chat::*;
pub use embeddings::*;
pub use responses::*;
pub use tokenize::*;

/// serde's `skip_serializing_if` for flags sent only when set.
fn is_false(b: &bool) -> bool {
    !*b
}
