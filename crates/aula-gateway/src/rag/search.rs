//! Searching stores. Queries are embedded as the searcher's own call.
//! Where the search runs:
//! * **On PostgreSQL** (unless `[rag] search = "memory"`) the database
//!   searches: BM25 over each chunk's terms and, with pgvector, cosine
//!   similarity on an HNSW index (`aula_store::vectors::search`); the two
//!   rankings are fused here by the same rule as in memory
//!   (`aula_rag::index::fuse`). Without pgvector, searches by meaning
//!   (dense, hybrid) use the in-memory index below; lexical ones still run
//!   in the database.
//! * **Otherwise** each store's index is loaded from the database into this
//!   gateway's memory on first use and again whenever the store's
//!   generation has moved (a file completed or left, here or on another
//!   gateway sharing the database).

use super::Handle;
use super::Loaded;
use crate::identity::Identity;
use aula_protocol::ApiError;
use aula_store::vectors::search::LexicalStats;
use serde_json::{Map, Value};
use std::sync::Arc;

/// One result: a chunk, its file and its score.
#[derive(Debug, Clone)]
pub struct Found {
    pub store_id: String,
    pub file_id: String,
    pub filename: String,
    pub score: f32,
    pub attributes: Map<String, Value>,
    pub text: String,
}

pub struct Request<'a> {
    pub queries: &'a [String],
    pub mode: aula_rag::Mode,
    pub filter: Option<&'a aula_rag::Filter>,
    pub k: usize,
    pub threshold: Option<f32>,
}

/// Search `stores` (already checked readable by `who`), best first.
pub async fn search(
    st: &Handle,
    who: &Identity,
    stores: &[String],
    req: &Request<'_>,
) -> Result<Vec<Found>, ApiError> {
    // A lexical search calls no engine, so no engine call counts it: it is
    // admitted here, against the searcher's request limits.
    let mut _admitted = None;
    let vectors = if req.mode == aula_rag::Mode::Lexical {
        _admitted = Some(
            st.gw
                .limiter
                .admit_without_model(who, aula_store::now_ms())
                .inspect_err(|e| {
                    crate::metrics::limit_refused(e);
                    st.gw.live.refused(e);
                })?,
        );
        Vec::new()
    } else {
        let model = st.rag.embedding_model().ok_or_else(|| {
            ApiError::Unavailable("no embedding model is configured, so stores cannot be searched by meaning; use \"search_mode\": \"lexical\"".into())
        })?;
        let texts: Vec<&str> = req.queries.iter().map(String::as_str).collect();
        super::ingest::embed(st, who, model, &texts).await?
    };
    let mut found = Vec::new();
    let (lexical_in_db, dense_in_db) = st.rag.searches_in_database(&st.gw.store);
    let in_db = match req.mode {
        aula_rag::Mode::Lexical => lexical_in_db,
        _ => lexical_in_db && dense_in_db,
    };
    for store_id in stores {
        if in_db {
            found.extend(
                in_database(&st.gw.store, &st.rag.stats, store_id, req, &vectors)
                    .await
                    .map_err(crate::files::store_error)?,
            );
            continue;
        }
        let slot = current(st, store_id).await?;
        let guard = slot.lock().await;
        let Some(loaded) = guard.as_ref() else {
            continue;
        };
        let hits = loaded.index.search(&aula_rag::Query {
            texts: req.queries,
            vectors: &vectors,
            mode: req.mode,
            filter: req.filter,
            k: req.k,
            threshold: req.threshold,
        });
        found.extend(hits.into_iter().map(|h| Found {
            store_id: store_id.clone(),
            file_id: h.chunk.file_id.to_string(),
            filename: h.chunk.filename.to_string(),
            score: h.score,
            attributes: (*h.chunk.attributes).clone(),
            text: h.chunk.text.clone(),
        }));
    }
    found.sort_by(|a, b| b.score.total_cmp(&a.score));
    found.truncate(req.k);
    Ok(found)
}

/// Each store's BM25 figures (chunks, average length, each term's
/// document frequency), read from the database once per generation of the
/// store: counting a common term's chunks reads most of the store.
#[derive(Default)]
pub struct StatsCache(std::sync::Mutex<std::collections::HashMap<String, Figures>>);

struct Figures {
    generation: i64,
    stats: LexicalStats,
    dfs: std::collections::HashMap<String, f64>,
}

/// Term frequencies kept, all stores together (past it, all start over).
/// Only terms a store holds are kept, so made-up query words add nothing.
const MAX_CACHED_TERMS: usize = 200_000;

impl StatsCache {
    /// The store's average chunk length, and each of `terms` that it holds
    /// with its idf.
    async fn weighted(
        &self,
        store: &aula_store::Store,
        store_id: &str,
        terms: &[&str],
    ) -> Result<(f64, Vec<(String, f64)>), aula_store::StoreError> {
        let generation = store.store_generation(store_id).await?.unwrap_or(-1);
        let lock = || self.0.lock().unwrap_or_else(|p| p.into_inner());
        let cached = lock()
            .get(store_id)
            .filter(|f| f.generation == generation)
            .map(|f| {
                let missing: Vec<String> = terms
                    .iter()
                    .filter(|t| !f.dfs.contains_key(**t))
                    .map(|t| t.to_string())
                    .collect();
                (f.stats, missing)
            });
        let (stats, missing) = match cached {
            Some(c) => c,
            None => (
                store.lexical_stats(store_id).await?,
                terms.iter().map(|t| t.to_string()).collect(),
            ),
        };
        let dfs = store.term_dfs(store_id, &missing).await?;
        let mut m = lock();
        if m.len() >= 4 * super::MAX_LOADED_INDEXES && !m.contains_key(store_id) {
            m.clear();
        }
        let f = m.entry(store_id.to_string()).or_insert_with(|| Figures {
            generation,
            stats,
            dfs: Default::default(),
        });
        if f.generation != generation {
            *f = Figures {
                generation,
                stats,
                dfs: Default::default(),
            };
        }
        let fresh: std::collections::HashMap<String, f64> = missing.into_iter().zip(dfs).collect();
        f.dfs.extend(
            fresh
                .iter()
                .filter(|(_, df)| **df > 0.0)
                .map(|(t, df)| (t.clone(), *df)),
        );
        let weighted = terms
            .iter()
            .filter_map(|t| {
                let df = *f.dfs.get(*t).or_else(|| fresh.get(*t))?;
                (df > 0.0).then(|| {
                    (
                        t.to_string(),
                        aula_store::vectors::search::idf(f.stats.chunks, df),
                    )
                })
            })
            .collect();
        let avg_terms = f.stats.avg_terms;
        if m.values().map(|f| f.dfs.len()).sum::<usize>() > MAX_CACHED_TERMS {
            m.clear();
        }
        Ok((avg_terms, weighted))
    }
}

/// Search one store inside the database (see the module's doc): the
/// chunks of the files the filter keeps, ranked by the database, fused
/// and cut here.
pub async fn in_database(
    store: &aula_store::Store,
    stats: &StatsCache,
    store_id: &str,
    req: &Request<'_>,
    vectors: &[Vec<f32>],
) -> Result<Vec<Found>, aula_store::StoreError> {
    use aula_rag::Mode;
    use aula_store::vectors::search::ChunkKey;
    // A filter keeps or drops whole files: their list narrows the search.
    let files: Option<Vec<String>> = match req.filter {
        None => None,
        Some(f) => Some(
            store
                .store_files(store_id, None)
                .await?
                .into_iter()
                .filter(|r| r.status == aula_store::FileStatus::Completed)
                .filter(|r| {
                    let attrs = serde_json::from_str::<Map<String, Value>>(&r.attributes)
                        .unwrap_or_default();
                    f.matches(&attrs)
                })
                .map(|r| r.file_id)
                .collect(),
        ),
    };
    if files.as_ref().is_some_and(Vec::is_empty) {
        return Ok(Vec::new());
    }
    let files = files.as_deref();
    let depth = match req.mode {
        Mode::Hybrid => aula_rag::index::CANDIDATES,
        _ => req.k,
    };
    let mut dense: Vec<(ChunkKey, f32)> = Vec::new();
    if req.mode != Mode::Lexical {
        // With several queries a chunk keeps its best score.
        let mut best: std::collections::HashMap<ChunkKey, f32> = Default::default();
        for v in vectors {
            for (key, score) in store.dense_search(store_id, v, files, depth).await? {
                let e = best.entry(key).or_insert(f32::NEG_INFINITY);
                *e = e.max(score);
            }
        }
        dense = best.into_iter().collect();
        aula_rag::index::top(&mut dense, depth);
    }
    let mut lexical = Vec::new();
    if req.mode != Mode::Dense {
        let terms = aula_rag::lexical::analyze(&req.queries.join(" "));
        let terms = aula_store::vectors::search::query_terms(&terms);
        let (avg_terms, weighted) = stats.weighted(store, store_id, &terms).await?;
        lexical = store
            .lexical_search(store_id, avg_terms, &weighted, files, depth)
            .await?;
    }
    let mut ranked = match req.mode {
        Mode::Dense => dense,
        Mode::Lexical => lexical,
        Mode::Hybrid => aula_rag::index::fuse(dense, lexical),
    };
    aula_rag::index::finish(&mut ranked, req.threshold, req.k);
    let keys: Vec<ChunkKey> = ranked.iter().map(|(k, _)| k.clone()).collect();
    let scores: std::collections::HashMap<ChunkKey, f32> = ranked.into_iter().collect();
    Ok(store
        .chunk_hits(store_id, &keys)
        .await?
        .into_iter()
        .map(|h| Found {
            store_id: store_id.to_string(),
            score: scores.get(&h.key).copied().unwrap_or(0.0),
            file_id: h.key.1,
            filename: h.filename,
            attributes: serde_json::from_str(&h.attributes).unwrap_or_default(),
            text: h.text,
        })
        .collect())
}

/// A file's id, name and attributes, shared by its chunks.
type FileOf = (Arc<str>, Arc<str>, Arc<Map<String, Value>>);

/// The store's index, reloaded when its generation has moved.
async fn current(
    st: &Handle,
    store_id: &str,
) -> Result<Arc<tokio::sync::Mutex<Option<Loaded>>>, ApiError> {
    let slot = st.rag.index_slot(store_id);
    let generation = st
        .gw
        .store
        .store_generation(store_id)
        .await
        .map_err(crate::files::store_error)?
        .ok_or_else(|| ApiError::NotFound(format!("no vector store `{store_id}`")))?;
    let mut guard = slot.lock().await;
    if guard.as_ref().is_some_and(|l| l.generation == generation) {
        drop(guard);
        return Ok(slot);
    }
    let rows = st
        .gw
        .store
        .store_chunks(store_id)
        .await
        .map_err(crate::files::store_error)?;
    let dim = rows.first().map_or(0, |r| r.embedding.len());
    let mut index = aula_rag::Index::new(dim);
    let mut files: std::collections::HashMap<String, FileOf> = Default::default();
    for r in rows {
        let (file_id, filename, attributes) = files
            .entry(r.file_id.clone())
            .or_insert_with(|| {
                let attrs =
                    serde_json::from_str::<Map<String, Value>>(&r.attributes).unwrap_or_default();
                (
                    r.file_id.as_str().into(),
                    r.filename.as_str().into(),
                    Arc::new(attrs),
                )
            })
            .clone();
        let chunk = aula_rag::Chunk {
            file_id,
            filename,
            attributes,
            text: r.text,
        };
        if let Err(e) = index.add(chunk, r.embedding) {
            tracing::warn!("vector store {store_id}: a chunk was left out of search: {e}");
        }
    }
    *guard = Some(Loaded { generation, index });
    drop(guard);
    Ok(slot)
}
