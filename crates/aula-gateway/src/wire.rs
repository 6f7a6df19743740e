//! The envelopes every OpenAI resource API shares: a page of a list and a
//! deletion's answer. Each feature's own objects are typed in its folder
//! (`files/wire.rs`, `rag/api/wire.rs`, `finetune/api/wire.rs`).

use serde::Serialize;

/// A page of a list: `first_id`/`last_id` name its ends (null when empty).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct List<T> {
    pub object: &'static str,
    pub data: Vec<T>,
    pub has_more: bool,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
}

impl<T> List<T> {
    /// `data`, each item named by `id`.
    pub fn of(data: Vec<T>, has_more: bool, id: impl Fn(&T) -> &str) -> List<T> {
        List {
            object: "list",
            first_id: data.first().map(|d| id(d).to_string()),
            last_id: data.last().map(|d| id(d).to_string()),
            data,
            has_more,
        }
    }
}

/// What a DELETE answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deleted {
    pub id: String,
    pub object: &'static str,
    pub deleted: bool,
}
