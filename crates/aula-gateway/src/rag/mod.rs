//! Vector stores: course material students can search, and that
//! `/v1/responses` cites. OpenAI's shapes (`/v1/vector_stores`, its
//! `/files`, `/file_batches` and `/search`); the library work (text, chunks,
//! BM25, dense scan, fusion, filters) is `aula_rag`'s.
//!
//! The rules this module enforces:
//! * **Who sees what.** A store belongs to its creator. A teacher or admin
//!   may share it, read-only, with groups (`shared_with_groups`, Aula's own
//!   field). Anyone who is neither its owner nor in one of those groups is
//!   told it does not exist (404) — also an admin. A reader who tries to
//!   change a shared store gets 403 (they know it exists). Only the
//!   caller's own files can be attached.
//! * **Attaching returns at once**; ingestion runs in the background,
//!   [`RagSettings::workers`] files at a time, **fair between owners**: a
//!   worker takes the oldest file of the owner it has served least recently
//!   among those no other worker is serving, so one owner's big batch never
//!   holds every worker. An owner whose embedding call meets their own rate
//!   limit is not waited for: the file goes back (still `in_progress`), the
//!   worker is freed, and that owner's files wait until the limit's retry
//!   time. An owner may have at most [`MAX_PENDING_FILES_PER_OWNER`] files
//!   waiting. Ingestion resumes after a restart:
//!   a file is `in_progress` until its chunks and its `completed` status
//!   are written in one transaction (so never twice, never half).
//! * **Parsing is isolated:** a document is turned into text by a child
//!   process (`aula extract`) with a time and memory limit; a parser that
//!   panics, loops or explodes fails that file (`last_error`), nothing else.
//! * **Chunks are measured in the embedding model's tokens** (its engine's
//!   `/tokenize`), clamped to what it can embed; `auto` is [`AUTO_MAX`]
//!   tokens with [`AUTO_OVERLAP`] shared.
//! * **Embeddings are the owner's calls** (ingestion) and the searcher's
//!   (queries): they pass the same limits, fair queue and ledger as
//!   `/v1/embeddings`.
//! * At most [`MAX_STORES_PER_USER`] stores per user; files and bytes are
//!   the Files API's limits. At most [`MAX_LOADED_INDEXES`] search indexes
//!   are kept in memory (the least recently used idle one goes).

pub mod api;
mod ingest;
pub mod search;

use crate::identity::Identity;
use aula_store::VectorStoreRecord;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What vector stores hold: the request path's services (searches and
/// ingestion call the embedding model through it, as the store's owner),
/// the uploaded files, and the stores' indexes and ingestion state.
#[derive(Clone)]
pub struct Handle {
    pub gw: Arc<crate::pipeline::Gateway>,
    pub files: Arc<crate::files::Files>,
    pub rag: Arc<Rag>,
}

/// `auto` chunking: tokens per chunk, and shared with the next.
pub const AUTO_MAX: usize = 256;
pub const AUTO_OVERLAP: usize = 64;
/// `static` chunking's bounds (OpenAI's).
pub const STATIC_MIN: usize = 100;
pub const STATIC_MAX: usize = 4096;
pub const MAX_STORES_PER_USER: i64 = 100;
/// Files one owner may have waiting for ingestion, all stores together.
pub const MAX_PENDING_FILES_PER_OWNER: i64 = 2_000;
/// How long one document may take to become text, and the memory its
/// parser may use.
pub const EXTRACT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
pub const EXTRACT_MEMORY_BYTES: u64 = 4 << 30;

#[derive(Debug, Clone)]
pub struct RagSettings {
    /// The model that embeds chunks and queries (default: the first
    /// embedding model configured).
    pub embedding_model: Option<String>,
    /// Files ingested at once.
    pub workers: usize,
    /// The program whose `extract` subcommand turns a document into text
    /// (the `aula` binary).
    pub extractor: Option<PathBuf>,
    /// This gateway's id in the database's list of gateways: the files its
    /// workers ingest are claimed with it.
    pub gateway: String,
    /// Where stores are searched on PostgreSQL (`[rag] search`).
    pub search: SearchPlace,
}

/// `[rag] search`: on PostgreSQL, search inside the database (the default)
/// or load each store into the gateway's memory as on one box. SQLite
/// always searches in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchPlace {
    #[default]
    Database,
    Memory,
}

impl Default for RagSettings {
    fn default() -> Self {
        RagSettings {
            embedding_model: None,
            workers: 2,
            extractor: std::env::current_exe().ok(),
            gateway: String::new(),
            search: SearchPlace::Database,
        }
    }
}

/// One store's index as last loaded, and the generation it reflects.
pub(crate) struct Loaded {
    pub(crate) generation: i64,
    pub(crate) index: aula_rag::Index,
}

/// A store's index slot, and when it was last asked for.
type Slot = (Arc<tokio::sync::Mutex<Option<Loaded>>>, std::time::Instant);

/// Search indexes kept loaded at once; past it, the least recently used
/// that no search is using are dropped (loaded again when asked for).
pub const MAX_LOADED_INDEXES: usize = 64;

pub struct Rag {
    pub(crate) settings: RagSettings,
    pub(crate) indexes: Mutex<HashMap<String, Slot>>,
    /// Files being ingested by this gateway (store id, file id), and by
    /// whose store.
    pub(crate) claimed: Mutex<HashMap<(String, String), String>>,
    /// Owners whose embedding calls met their rate limit: not served before.
    pub(crate) paused: Mutex<HashMap<String, std::time::Instant>>,
    /// When each owner was last given a worker (round robin).
    pub(crate) served: Mutex<HashMap<String, std::time::Instant>>,
    pub(crate) wake: tokio::sync::Notify,
    /// Held while a store is created (the per-user cap's count and insert).
    pub(crate) creating: tokio::sync::Mutex<()>,
    /// Files put back for their owner's rate limit: the work done so far,
    /// taken up again when the file is (else a file needing more calls
    /// than its owner may make in a minute would start over for ever).
    pub(crate) partial: Mutex<ingest::PartialWork>,
    /// BM25's figures of the stores searched in the database.
    pub(crate) stats: search::StatsCache,
}

impl Rag {
    pub fn new(settings: RagSettings) -> Rag {
        Rag {
            settings,
            indexes: Default::default(),
            claimed: Default::default(),
            paused: Default::default(),
            served: Default::default(),
            wake: tokio::sync::Notify::new(),
            creating: tokio::sync::Mutex::new(()),
            partial: Default::default(),
            stats: Default::default(),
        }
    }

    /// Does the database search (lexical, by meaning)?
    pub fn searches_in_database(&self, store: &aula_store::Store) -> (bool, bool) {
        if self.settings.search == SearchPlace::Memory {
            return (false, false);
        }
        store.searches_in_database()
    }

    pub fn embedding_model(&self) -> Option<&str> {
        self.settings.embedding_model.as_deref()
    }

    pub(crate) fn index_slot(&self, store_id: &str) -> Arc<tokio::sync::Mutex<Option<Loaded>>> {
        let mut m = self.indexes.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if !m.contains_key(store_id) && m.len() >= MAX_LOADED_INDEXES {
            // Unused slots (no search holds their Arc), oldest first.
            let mut idle: Vec<(std::time::Instant, String)> = m
                .iter()
                .filter(|(_, (slot, _))| Arc::strong_count(slot) == 1)
                .map(|(id, (_, used))| (*used, id.clone()))
                .collect();
            idle.sort();
            let excess = m.len() + 1 - MAX_LOADED_INDEXES;
            for (_, id) in idle.into_iter().take(excess) {
                m.remove(&id);
            }
        }
        let entry = m
            .entry(store_id.to_string())
            .or_insert_with(|| (Default::default(), now));
        entry.1 = now;
        entry.0.clone()
    }

    pub(crate) fn forget(&self, store_id: &str) {
        self.indexes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(store_id);
    }
}

/// Start the ingestion workers under `tasks`, and on PostgreSQL the task
/// that fills the search columns of chunks written before they existed.
pub fn start(st: &Handle, tasks: &aula_fleet::tasks::Tasks) {
    for _ in 0..st.rag.settings.workers.max(1) {
        tasks.spawn("ingest", ingest::worker(st.clone()));
    }
    if st.gw.store.is_postgres() {
        let store = st.gw.store.clone();
        tasks.spawn(
            "search-backfill",
            async move { index_missing(&store).await },
        );
    }
}

/// Give every chunk without them its search columns (terms, and the
/// pgvector column once pgvector is enabled), a few hundred at a time.
pub async fn index_missing(store: &aula_store::Store) {
    let mut done = 0usize;
    let mut last: Option<(String, String, i64)> = None;
    let mut touched = std::collections::BTreeSet::new();
    loop {
        let batch = match store.unindexed_chunks(500).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("vector stores: reading chunks to index: {e}");
                return;
            }
        };
        let Some(first) = batch.first() else {
            break;
        };
        let first = (first.store_id.clone(), first.file_id.clone(), first.seq);
        if last.as_ref() == Some(&first) {
            tracing::warn!(
                "vector stores: a chunk stays unindexed after indexing; stopping ({first:?})"
            );
            return;
        }
        last = Some(first);
        for c in &batch {
            let terms = aula_rag::lexical::analyze(&c.text);
            if let Err(e) = store.index_chunk(c, &terms).await {
                tracing::warn!("vector stores: indexing a chunk for search: {e}");
                return;
            }
            touched.insert(c.store_id.clone());
        }
        done += batch.len();
    }
    // What was computed from these stores before (BM25's figures) is stale.
    for id in touched {
        if let Err(e) = store.bump_store_generation(&id).await {
            tracing::warn!("vector stores: {e}");
        }
    }
    if done > 0 {
        tracing::info!("vector stores: {done} chunks indexed for search in the database");
    }
}

/// May `id` read this store?
pub(crate) fn readable(s: &VectorStoreRecord, id: &Identity) -> bool {
    s.owner == id.name || s.shares.iter().any(|g| id.groups.contains(g))
}

/// The identity a store's own work (ingestion) runs as: its owner.
pub(crate) fn owner_identity(s: &VectorStoreRecord) -> Identity {
    Identity {
        name: s.owner.clone(),
        role: s.owner_role,
        groups: s.owner_groups.clone(),
        via: crate::identity::Via::Local,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 30, finding 9: search indexes were never evicted. At most
    /// MAX_LOADED_INDEXES stay; one a search is using is never dropped.
    #[test]
    fn loaded_indexes_are_bounded_and_in_use_ones_stay() {
        let rag = Rag::new(RagSettings::default());
        let held = rag.index_slot("vs_held");
        for i in 0..MAX_LOADED_INDEXES * 2 {
            rag.index_slot(&format!("vs_{i}"));
        }
        let m = rag.indexes.lock().unwrap_or_else(|p| p.into_inner());
        assert!(m.len() <= MAX_LOADED_INDEXES, "{}", m.len());
        assert!(m.contains_key("vs_held"));
        assert!(Arc::ptr_eq(&m["vs_held"].0, &held));
    }
}
