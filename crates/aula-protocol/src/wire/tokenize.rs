//! `/tokenize`, an engine extension (Aula's engine, llama-server and vLLM
//! have one): the gateway counts a document's words in the embedding
//! model's own tokens before it cuts the document into chunks.

use serde::{Deserialize, Serialize};

/// Texts to count, as the gateway asks for them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizeRequest {
    pub model: String,
    pub content: Vec<String>,
}

/// Each text's tokens, and the most tokens one input may have.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokenized {
    pub tokens: Vec<Vec<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
}
