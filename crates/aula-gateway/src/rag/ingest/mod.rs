//! The ingestion workers: each takes a waiting file no worker of this
//! gateway holds — fair between owners (see the module rules in `rag`) —
//! turns it into chunks with their embeddings, and commits them with the
//! file's `completed` status in one transaction; or marks the file `failed`
//! with the reason; or, when its owner's rate limit stops an embedding call,
//! puts it back and pauses that owner until the limit's retry time, so that
//! one student's limit never holds a worker everyone shares.

use super::Handle;
use crate::identity::Identity;
use aula_protocol::ApiError;
use aula_protocol::wire::{EmbeddingsRequest, TokenizeRequest};
use aula_store::{NewChunk, StoreFileRecord};
use std::time::{Duration, Instant};

mod extract;
mod partial;

use extract::*;
pub use partial::*;

/// Chunks embedded per call: small, because the embedding engine runs a
/// call to its end and a search's query waits behind it (32 chunks of 256
/// tokens held MiniLM for seconds on a 2-core CPU; see BENCHMARKS.md).
const EMBED_BATCH: usize = 8;

/// Distinct words tokenized per call.
const TOKENIZE_BATCH: usize = 20_000;

/// The most text one document may yield.
const MAX_TEXT_BYTES: usize = 64 << 20;

/// The longest an owner is paused for one rate limit.
const MAX_PAUSE: Duration = Duration::from_secs(600);

/// Why a file's ingestion stopped short.
enum Stop {
    /// It failed: OpenAI's `last_error.code` and a message.
    Failed(&'static str, String),
    /// Its owner's rate limit: back in the queue, that owner paused this long.
    Later(Duration),
}

impl From<ApiError> for Stop {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::RateLimited { retry_after_s, .. } => {
                Stop::Later(Duration::from_secs(retry_after_s.max(1)).min(MAX_PAUSE))
            }
            e => Stop::Failed("server_error", e.to_string()),
        }
    }
}

pub(super) async fn worker(st: Handle) {
    loop {
        match next(&st).await {
            Some((row, owner)) => {
                let key = (row.store_id.clone(), row.file_id.clone());
                let outcome = ingest(&st, &row).await;
                let store = &st.gw.store;
                let result = match outcome {
                    Ok((chunks, bytes)) => store
                        .complete_store_file(&row.store_id, &row.file_id, &chunks, bytes)
                        .await
                        .map(|_| ()),
                    Err(Stop::Later(after)) => {
                        tracing::info!(
                            "vector store {}: file {} waits {} s for {owner}'s rate limit",
                            row.store_id,
                            row.file_id,
                            after.as_secs()
                        );
                        st.rag
                            .paused
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(owner.clone(), Instant::now() + after);
                        Ok(())
                    }
                    Err(Stop::Failed(code, message)) => {
                        tracing::info!(
                            "vector store {}: file {} failed: {message}",
                            row.store_id,
                            row.file_id
                        );
                        store
                            .finish_store_file(
                                &row.store_id,
                                &row.file_id,
                                aula_store::FileStatus::Failed,
                                Some(code),
                                Some(&message),
                            )
                            .await
                            .map(|_| ())
                    }
                };
                if let Err(e) = result {
                    // Left in_progress: tried again after a pause.
                    tracing::warn!(
                        "vector store {}: file {} could not be recorded: {e}",
                        row.store_id,
                        row.file_id
                    );
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                // Done with, paused or left to retry: any gateway may take
                // it up (a finished file is no longer waiting).
                if let Err(e) = store
                    .release_store_file(&row.store_id, &row.file_id, &st.rag.settings.gateway)
                    .await
                {
                    tracing::warn!(
                        "vector store {}: file {}: its claim could not be given back: {e}",
                        row.store_id,
                        row.file_id
                    );
                }
                st.rag
                    .claimed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
            }
            None => {
                // New work wakes the workers; a pause also finds files that
                // another gateway sharing the database was given, and owners
                // whose pause has ended.
                let _ = tokio::time::timeout(Duration::from_secs(5), st.rag.wake.notified()).await;
            }
        }
    }
}

/// How many of each owner's oldest waiting files a worker looks at, past
/// those this gateway holds.
const LOOK_AHEAD: i64 = 8;

/// Claim a waiting file no worker here holds and no other gateway alive
/// has claimed, of an owner who is not paused: of an owner no worker is
/// serving if there is one, else any; of the owners that qualify, the one
/// served least recently (never served first); of that owner's files, the
/// oldest. The claim is this worker's (`claimed`) and this gateway's (in
/// the database).
async fn next(st: &Handle) -> Option<(StoreFileRecord, String)> {
    for (row, owner) in candidates(st).await {
        let key = (row.store_id.clone(), row.file_id.clone());
        {
            let mut claimed = st.rag.claimed.lock().unwrap_or_else(|p| p.into_inner());
            if claimed.contains_key(&key) {
                continue; // another worker here took it meanwhile
            }
            claimed.insert(key.clone(), owner.clone());
        }
        let unclaim = || {
            st.rag
                .claimed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        };
        match st
            .gw
            .store
            .claim_store_file(&row.store_id, &row.file_id, &st.rag.settings.gateway)
            .await
        {
            Ok(true) => {
                served(st, &owner);
                return Some((row, owner));
            }
            // Another gateway ingests it.
            Ok(false) => unclaim(),
            Err(e) => {
                unclaim();
                tracing::warn!("cannot claim a file for ingestion: {e}");
                return None;
            }
        }
    }
    None
}

/// Note that `owner` was served now; owners gone from the queue are
/// forgotten (the map stays small).
fn served(st: &Handle, owner: &str) {
    let mut served = st.rag.served.lock().unwrap_or_else(|p| p.into_inner());
    served.insert(owner.to_string(), Instant::now());
    if served.len() > 4 * 1024
        && let Some(cutoff) = Instant::now().checked_sub(Duration::from_secs(3600))
    {
        served.retain(|_, t| *t > cutoff);
    }
}

/// The waiting files this gateway's workers could take, best first (see
/// [`next`]).
async fn candidates(st: &Handle) -> Vec<(StoreFileRecord, String)> {
    let held = st
        .rag
        .claimed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .len() as i64;
    let pending = match st
        .gw
        .store
        .pending_store_files_by_owner(held + LOOK_AHEAD)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("cannot read the files waiting for ingestion: {e}");
            return Vec::new();
        }
    };
    let now = Instant::now();
    let mut paused = st.rag.paused.lock().unwrap_or_else(|p| p.into_inner());
    paused.retain(|_, until| *until > now);
    let claimed = st.rag.claimed.lock().unwrap_or_else(|p| p.into_inner());
    let served = st.rag.served.lock().unwrap_or_else(|p| p.into_inner());
    let busy: std::collections::HashSet<&str> = claimed.values().map(String::as_str).collect();
    let mut open: Vec<(StoreFileRecord, String)> = pending
        .into_iter()
        .filter(|(r, o)| {
            !paused.contains_key(o)
                && !claimed.contains_key(&(r.store_id.clone(), r.file_id.clone()))
        })
        .collect();
    // Stable: an owner's files stay oldest first.
    open.sort_by_key(|(_, o)| (busy.contains(o.as_str()), served.get(o).copied()));
    open
}

async fn ingest(st: &Handle, row: &StoreFileRecord) -> Result<(Vec<NewChunk>, i64), Stop> {
    let store = st
        .gw
        .store
        .vector_store(&row.store_id)
        .await
        .map_err(|e| Stop::Failed("server_error", e.to_string()))?
        .ok_or_else(|| Stop::Failed("server_error", "the vector store was deleted".into()))?;
    let file = st
        .gw
        .store
        .file(&row.file_id)
        .await
        .map_err(|e| Stop::Failed("server_error", e.to_string()))?
        .ok_or_else(|| Stop::Failed("invalid_file", "the file was deleted".into()))?;
    let model = st
        .rag
        .embedding_model()
        .ok_or_else(|| Stop::Failed("server_error", "no embedding model is configured".into()))?
        .to_string();
    let owner = super::owner_identity(&store);
    let key = (row.store_id.clone(), row.file_id.clone());
    let taken = st
        .rag
        .partial
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take(&key)
        // Detached and attached again meanwhile, chunked another way.
        .filter(|p| p.chunking == row.chunking);
    let Partial {
        pieces,
        mut vectors,
        ..
    } = match taken {
        Some(p) => p,
        None => {
            let text = extract(st, &st.files.path(&file.id), &file.filename).await?;
            let words: Vec<&str> = text.split_whitespace().collect();
            let (counts, limit) = token_counts(st, &owner, &model, &words).await?;
            let chunking: aula_rag::Chunking =
                serde_json::from_str(&row.chunking).map_err(|e| {
                    Stop::Failed(
                        "server_error",
                        format!("the file's chunking cannot be read: {e}"),
                    )
                })?;
            let pieces = aula_rag::chunk(&words, &counts, clamp(chunking, limit));
            let vectors = Vec::with_capacity(pieces.len());
            Partial {
                chunking: row.chunking.clone(),
                pieces,
                vectors,
            }
        }
    };
    while vectors.len() < pieces.len() {
        let batch = &pieces[vectors.len()..(vectors.len() + EMBED_BATCH).min(pieces.len())];
        let texts: Vec<&str> = batch.iter().map(|p| p.text.as_str()).collect();
        match embed_once(st, &owner, &model, &texts).await {
            Ok(v) => vectors.extend(v),
            Err(e) => {
                let stop = Stop::from(e);
                if matches!(stop, Stop::Later(_)) {
                    st.rag
                        .partial
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .keep(
                            key,
                            &owner.name,
                            Partial {
                                chunking: row.chunking.clone(),
                                pieces,
                                vectors,
                            },
                        );
                }
                return Err(stop);
            }
        }
    }
    // Each piece with its vector, the text moved, not copied.
    let chunks: Vec<NewChunk> = pieces
        .into_iter()
        .zip(vectors)
        .map(|(p, v)| NewChunk {
            terms: aula_rag::lexical::analyze(&p.text),
            text: p.text,
            tokens: p.tokens as i64,
            embedding: v,
        })
        .collect();
    let bytes = chunks
        .iter()
        .map(|c| c.text.len() as i64 + 4 * c.embedding.len() as i64)
        .sum();
    Ok((chunks, bytes))
}

/// Chunk sizes within what the model embeds (its special tokens aside).
pub(crate) fn clamp(c: aula_rag::Chunking, limit: Option<usize>) -> aula_rag::Chunking {
    let room = limit
        .map(|l| l.saturating_sub(2).max(8))
        .unwrap_or(usize::MAX);
    let max = c.max_tokens.min(room);
    aula_rag::Chunking {
        max_tokens: max,
        overlap_tokens: c.overlap_tokens.min(max / 2),
    }
}

/// Each word's token count, and the most tokens one input may have, from
/// the embedding engine's `/tokenize`, called as the file's owner (limits,
/// fair queue and ledger, like the embeddings: a store's ingestion takes no
/// engine time outside its owner's share). An engine without it (a `url`
/// server that is not Aula's or llama-server) gets an estimate: a token per
/// 3 bytes of a word, at least one. The owner's rate limit puts the file
/// back ([`Stop::Later`]); a busy box is waited out.
async fn token_counts(
    st: &Handle,
    owner: &Identity,
    model: &str,
    words: &[&str],
) -> Result<(Vec<usize>, Option<usize>), Stop> {
    let mut unique: Vec<&str> = words.to_vec();
    unique.sort_unstable();
    unique.dedup();
    let mut counts = std::collections::HashMap::with_capacity(unique.len());
    let mut limit = None;
    for batch in unique.chunks(TOKENIZE_BATCH) {
        let req = TokenizeRequest {
            model: model.to_string(),
            content: batch.iter().map(|w| w.to_string()).collect(),
        };
        let answer = match when_free(|| st.gw.tokenize(owner, &req)).await {
            Ok(v) => Some(v),
            // The engine has no `/tokenize` (or refused it): estimate.
            Err(ApiError::InvalidRequest { .. } | ApiError::BadGateway(_)) => None,
            Err(e) => return Err(e.into()),
        };
        match answer {
            Some(a) if a.tokens.len() == batch.len() => {
                limit = a.max_tokens.map(|n| n as usize);
                for (w, l) in batch.iter().zip(&a.tokens) {
                    counts.insert(*w, l.len().max(1));
                }
            }
            _ => {
                for w in batch {
                    counts.insert(*w, w.len().div_ceil(3).max(1));
                }
            }
        }
    }
    Ok((
        words
            .iter()
            .map(|w| counts.get(w).copied().unwrap_or(1))
            .collect(),
        limit,
    ))
}

/// Vectors for `texts`, as `who`'s `/v1/embeddings` call. A rate limit is
/// waited out (up to about ten minutes: a search waits for its own
/// caller's limit); a spent quota fails. The box being busy (503) is waited
/// out the same way.
pub(crate) async fn embed(
    st: &Handle,
    who: &Identity,
    model: &str,
    texts: &[&str],
) -> Result<Vec<Vec<f32>>, ApiError> {
    let mut waited = 0;
    loop {
        match embed_once(st, who, model, texts).await {
            Err(ApiError::RateLimited { retry_after_s, .. }) if waited < 600 => {
                let s = retry_after_s.clamp(1, 60);
                waited += s;
                tokio::time::sleep(Duration::from_secs(s)).await;
            }
            other => return other,
        }
    }
}

/// The same for ingestion, which never waits for its owner's rate limit
/// (its worker is shared): that refusal is returned at once, and the file
/// goes back in the queue. A busy box (503) is still waited out.
async fn embed_once(
    st: &Handle,
    who: &Identity,
    model: &str,
    texts: &[&str],
) -> Result<Vec<Vec<f32>>, ApiError> {
    let req = EmbeddingsRequest {
        model: model.to_string(),
        input: texts.iter().map(|t| t.to_string()).collect(),
        truncate_prompt_tokens: Some(-1),
    };
    when_free(|| st.gw.embed(who, &req)).await
}

/// A call through the pipeline, waiting out a busy box (503: a full queue)
/// for up to ten minutes; any other refusal is returned at once.
async fn when_free<T, F, Fut>(call: F) -> Result<T, ApiError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let mut waited = 0;
    loop {
        match call().await {
            Err(ApiError::Overloaded(_)) if waited < 600 => {
                waited += 2;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partial(chunks: usize, text: usize) -> Partial {
        let piece = || aula_rag::chunk::Piece {
            text: "x".repeat(text),
            tokens: 1,
        };
        Partial {
            chunking: String::new(),
            pieces: (0..chunks).map(|_| piece()).collect(),
            vectors: (0..chunks / 2).map(|_| vec![0.0; 384]).collect(),
        }
    }

    fn key(f: &str) -> (String, String) {
        ("vs_1".into(), f.into())
    }

    #[test]
    fn work_kept_across_a_pause_is_taken_back_once() {
        let mut w = PartialWork::default();
        w.keep(key("a"), "ann", partial(10, 100));
        assert!(w.held() > 0);
        let p = w.take(&key("a")).unwrap();
        assert_eq!((p.pieces.len(), p.vectors.len()), (10, 5));
        assert!(w.take(&key("a")).is_none());
        assert_eq!(w.held(), 0);
    }

    #[test]
    fn work_past_the_bound_is_not_kept() {
        let mut w = PartialWork::default();
        // About 100 MB each, each another owner's: two fit, the third does not.
        for f in ["a", "b", "c"] {
            w.keep(key(f), f, partial(1000, 100_000));
        }
        assert!(w.held() <= MAX_PARTIAL_BYTES);
        assert!(w.take(&key("a")).is_some());
        assert!(w.take(&key("b")).is_some());
        assert!(w.take(&key("c")).is_none());
        // Kept again under the same key: counted once.
        w.keep(key("a"), "a", partial(10, 10));
        let once = w.held();
        w.keep(key("a"), "a", partial(10, 10));
        assert_eq!(w.held(), once);
    }

    /// One owner's files hold at most half the bound: a student with a
    /// tight rate limit and several large documents leaves room for others.
    #[test]
    fn one_owner_holds_at_most_a_share() {
        let mut w = PartialWork::default();
        // About 50 MB each: two of Ann's fit in her share, the third does not.
        for f in ["a1", "a2", "a3"] {
            w.keep(key(f), "ann", partial(500, 100_000));
        }
        assert!(w.held() <= MAX_PARTIAL_BYTES_PER_OWNER);
        assert!(w.take(&key("a3")).is_none());
        // Bob's work still fits beside hers.
        w.keep(key("b1"), "bob", partial(500, 100_000));
        assert!(w.take(&key("b1")).is_some());
        assert!(w.take(&key("a1")).is_some());
        assert!(w.take(&key("a2")).is_some());
        assert_eq!(w.held(), 0);
    }

    #[test]
    fn work_kept_too_long_is_dropped() {
        let mut w = PartialWork::default();
        let t0 = Instant::now();
        w.keep_at(key("stale"), "ann", partial(10, 100), t0);
        w.keep_at(
            key("fresh"),
            "ann",
            partial(10, 100),
            t0 + PARTIAL_KEPT_FOR / 2,
        );
        w.keep_at(key("new"), "ann", partial(10, 100), t0 + PARTIAL_KEPT_FOR);
        assert!(w.take(&key("stale")).is_none());
        assert!(w.take(&key("fresh")).is_some());
        assert!(w.take(&key("new")).is_some());
        assert_eq!(w.held(), 0);
    }
}
