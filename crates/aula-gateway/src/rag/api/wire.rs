//! The vector store API's objects, typed: a store, a store's file, a file
//! batch, a search's page of results.

use aula_store::{FileCounts, FileStatus, StoreFileRecord};
use serde::Serialize;
use serde_json::{Map, Value};

/// A vector store. Stores do not expire: no `expires_after` (OpenAI's
/// description has no null for it), `expires_at` null (it has).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VectorStoreObject {
    pub id: String,
    pub object: &'static str,
    pub created_at: i64,
    pub name: String,
    pub description: Option<String>,
    pub usage_bytes: i64,
    pub file_counts: FileCounts,
    pub status: FileStatus,
    pub expires_at: Option<i64>,
    pub last_active_at: i64,
    pub metadata: Value,
    /// Aula's: who owns it and which groups may search it.
    pub owner: String,
    pub shared_with_groups: Vec<String>,
}

/// A file of a store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VectorStoreFileObject {
    pub id: String,
    pub object: &'static str,
    pub created_at: i64,
    pub vector_store_id: String,
    pub status: FileStatus,
    pub usage_bytes: i64,
    pub last_error: Option<LastError>,
    pub attributes: Value,
    pub chunking_strategy: ChunkingStrategy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    pub code: String,
    pub message: Option<String>,
}

/// How a file was cut: `static` with its sizes, or `other` (unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChunkingStrategy {
    Static {
        #[serde(rename = "static")]
        sizes: StaticSizes,
    },
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StaticSizes {
    pub max_chunk_size_tokens: usize,
    pub chunk_overlap_tokens: usize,
}

impl ChunkingStrategy {
    /// From the chunking kept with the file (its JSON).
    pub fn of(text: &str) -> ChunkingStrategy {
        match serde_json::from_str::<aula_rag::Chunking>(text) {
            Ok(c) => ChunkingStrategy::Static {
                sizes: StaticSizes {
                    max_chunk_size_tokens: c.max_tokens,
                    chunk_overlap_tokens: c.overlap_tokens,
                },
            },
            Err(_) => ChunkingStrategy::Other,
        }
    }
}

impl From<&StoreFileRecord> for VectorStoreFileObject {
    fn from(f: &StoreFileRecord) -> VectorStoreFileObject {
        VectorStoreFileObject {
            id: f.file_id.clone(),
            object: "vector_store.file",
            created_at: f.created_ms / 1000,
            vector_store_id: f.store_id.clone(),
            status: f.status,
            usage_bytes: f.usage_bytes,
            last_error: f.error_code.as_ref().map(|c| LastError {
                code: c.clone(),
                message: f.error_message.clone(),
            }),
            attributes: json_object(&f.attributes),
            chunking_strategy: ChunkingStrategy::of(&f.chunking),
        }
    }
}

/// A JSON object kept as text (`{}` when it does not read as one).
pub fn json_object(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::Object(Map::new()),
    }
}

/// A file batch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchObject {
    pub id: String,
    pub object: &'static str,
    pub created_at: i64,
    pub vector_store_id: String,
    pub status: FileStatus,
    pub file_counts: FileCounts,
}

/// A search's page of results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchPage {
    pub object: &'static str,
    pub search_query: Vec<String>,
    pub data: Vec<SearchHit>,
    pub has_more: bool,
    pub next_page: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchHit {
    pub file_id: String,
    pub filename: String,
    pub score: f32,
    pub attributes: Map<String, Value>,
    pub content: Vec<SearchContent>,
}

/// A hit's text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SearchContent {
    Text { text: String },
}
