//! The HTTP handlers of `/v1/vector_stores` (OpenAI's shapes), a file per
//! resource. Who may do what is in the module above; every handler starts
//! by authenticating and finding the store as the caller may see it. Here:
//! what the resources share (reading fields, the objects' shapes, pages).

use super::Handle;
use super::{AUTO_MAX, AUTO_OVERLAP, STATIC_MAX, STATIC_MIN};
use crate::files::{own_file, store_error};
use crate::identity::Identity;
use crate::page::{Page, Takes};
use aula_protocol::ApiError;
use aula_store::{FileStatus, StoreFileRecord, VectorStoreRecord, now_ms};
use axum::Json;
use serde_json::{Map, Value};

mod batches;
mod files;
mod search;
mod stores;
mod wire;

pub use batches::*;
pub use files::*;
pub use search::*;
pub use stores::*;

pub use wire::*;

type Answer = Result<axum::response::Response, ApiError>;

/// A typed object as a handler's answer.
fn ok(x: impl serde::Serialize) -> Answer {
    Ok(axum::response::IntoResponse::into_response(Json(x)))
}

/// Most files one create or batch call attaches.
pub const MAX_FILES_PER_CALL: usize = 500;

/// Most query strings one search takes.
pub const MAX_QUERIES: usize = 10;
/// Longest query string (characters): a search is a question, not a
/// document, and each of its terms costs an index lookup.
pub const MAX_QUERY_CHARS: usize = 8_000;

/// `metadata`: at most 16 string values (keys ≤ 64, values ≤ 512 characters).
fn metadata(v: Option<&Value>) -> Result<Option<String>, ApiError> {
    match v {
        None => Ok(None),
        Some(Value::Null) => Ok(Some("{}".into())),
        Some(Value::Object(m))
            if m.len() <= 16
                && m.iter().all(|(k, v)| {
                    k.chars().count() <= 64 && v.as_str().is_some_and(|s| s.chars().count() <= 512)
                }) =>
        {
            Ok(Some(Value::Object(m.clone()).to_string()))
        }
        Some(_) => Err(ApiError::invalid_param(
            "metadata",
            "`metadata` must be an object of at most 16 strings (keys up to 64 characters, values up to 512)",
        )),
    }
}

/// `attributes`: at most 16 keys, each a string (≤ 512), number or boolean.
fn attributes(v: Option<&Value>) -> Result<Option<String>, ApiError> {
    match v {
        None => Ok(None),
        Some(Value::Null) => Ok(Some("{}".into())),
        Some(Value::Object(m))
            if m.len() <= 16
                && m.iter().all(|(k, v)| {
                    k.chars().count() <= 64
                        && match v {
                            Value::String(s) => s.chars().count() <= 512,
                            Value::Number(_) | Value::Bool(_) => true,
                            _ => false,
                        }
                }) =>
        {
            Ok(Some(Value::Object(m.clone()).to_string()))
        }
        Some(_) => Err(ApiError::invalid_param(
            "attributes",
            "`attributes` must be an object of at most 16 keys, each a string (up to 512 characters), number or boolean",
        )),
    }
}

/// `chunking_strategy`: `auto` (or absent) or `static` with OpenAI's bounds.
fn chunking(v: Option<&Value>) -> Result<Option<aula_rag::Chunking>, ApiError> {
    let bad = |m: String| ApiError::invalid_param("chunking_strategy", m);
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    match v["type"].as_str() {
        Some("auto") if v.as_object().is_some_and(|o| o.len() == 1) => Ok(Some(aula_rag::Chunking {
            max_tokens: AUTO_MAX,
            overlap_tokens: AUTO_OVERLAP,
        })),
        Some("static")
            if v.as_object().is_some_and(|o| o.len() == 2)
                && v["static"]
                    .as_object()
                    .is_some_and(|s| s.keys().all(|k| k == "max_chunk_size_tokens" || k == "chunk_overlap_tokens")) =>
        {
            let s = &v["static"];
            let max = s["max_chunk_size_tokens"].as_u64().map(|n| n as usize);
            let overlap = s["chunk_overlap_tokens"].as_u64().map(|n| n as usize);
            match (max, overlap) {
                (Some(m), Some(o)) if (STATIC_MIN..=STATIC_MAX).contains(&m) && o <= m / 2 => Ok(Some(aula_rag::Chunking {
                    max_tokens: m,
                    overlap_tokens: o,
                })),
                _ => Err(bad(format!(
                    "a `static` strategy needs `static.max_chunk_size_tokens` ({STATIC_MIN} to {STATIC_MAX}) and `static.chunk_overlap_tokens` (at most half of it)"
                ))),
            }
        }
        _ => Err(bad("`chunking_strategy` must be {\"type\": \"auto\"} or {\"type\": \"static\", \"static\": {...}}".into())),
    }
}

fn chunking_json(c: aula_rag::Chunking) -> String {
    serde_json::to_string(&c).unwrap_or_else(|_| "{}".into())
}

fn refuse_expiry(o: &Map<String, Value>) -> Result<(), ApiError> {
    if o.get("expires_after").is_some_and(|v| !v.is_null()) {
        return Err(ApiError::invalid_param(
            "expires_after",
            "Aula's vector stores do not expire; leave out `expires_after` and delete the store when it is no longer needed",
        ));
    }
    Ok(())
}

/// The store as `id` may see it; 404 when they may not.
async fn visible(
    st: &Handle,
    id: &Identity,
    store_id: &str,
) -> Result<VectorStoreRecord, ApiError> {
    match st
        .gw
        .store
        .vector_store(store_id)
        .await
        .map_err(store_error)?
    {
        Some(s) if super::readable(&s, id) => Ok(s),
        _ => Err(ApiError::NotFound(format!("no vector store `{store_id}`"))),
    }
}

/// The store, when `id` may change it (its owner): 403 for a reader.
async fn owned(st: &Handle, id: &Identity, store_id: &str) -> Result<VectorStoreRecord, ApiError> {
    let s = visible(st, id, store_id).await?;
    if s.owner != id.name {
        return Err(ApiError::Forbidden {
            message: format!("the vector store `{store_id}` is shared with you read-only"),
            code: "read_only",
            resets_at: None,
        });
    }
    Ok(s)
}

async fn store_object(st: &Handle, s: &VectorStoreRecord) -> Result<VectorStoreObject, ApiError> {
    let (counts, bytes) = st
        .gw
        .store
        .store_file_counts(&s.id, None)
        .await
        .map_err(store_error)?;
    Ok(VectorStoreObject {
        id: s.id.clone(),
        object: "vector_store",
        created_at: s.created_ms / 1000,
        name: s.name.clone(),
        description: s.description.clone(),
        usage_bytes: bytes,
        file_counts: counts,
        status: if counts.in_progress > 0 {
            FileStatus::InProgress
        } else {
            FileStatus::Completed
        },
        expires_at: None,
        last_active_at: s.last_active_ms / 1000,
        metadata: json_object(&s.metadata),
        owner: s.owner.clone(),
        shared_with_groups: s.shares.clone(),
    })
}

/// Attach the caller's files to a store (each as `in_progress`) and wake
/// the workers. A file attached already is left as it is.
async fn attach(
    st: &Handle,
    id: &Identity,
    s: &VectorStoreRecord,
    files: &[(String, Option<String>, Option<aula_rag::Chunking>)],
    batch: Option<&str>,
) -> Result<(), ApiError> {
    let default_chunking: aula_rag::Chunking =
        serde_json::from_str(&s.chunking).unwrap_or(aula_rag::Chunking {
            max_tokens: AUTO_MAX,
            overlap_tokens: AUTO_OVERLAP,
        });
    // Every file is checked before any is attached.
    let mut records = Vec::with_capacity(files.len());
    for (file_id, attrs, c) in files {
        let f = own_body_file(st, id, file_id).await?;
        if !crate::files::PURPOSES.contains(&f.purpose.as_str()) {
            return Err(ApiError::invalid_param(
                "file_id",
                format!(
                    "the file `{file_id}` was uploaded for `{}`, not for search",
                    f.purpose
                ),
            ));
        }
        records.push(StoreFileRecord {
            store_id: s.id.clone(),
            file_id: f.id,
            status: FileStatus::InProgress,
            error_code: None,
            error_message: None,
            attributes: attrs.clone().unwrap_or_else(|| "{}".into()),
            chunking: chunking_json(c.unwrap_or(default_chunking)),
            usage_bytes: 0,
            created_ms: now_ms(),
        });
    }
    // A bound on what one owner can queue for the (shared) workers.
    let waiting = st
        .gw
        .store
        .pending_store_files_of(&s.owner)
        .await
        .map_err(store_error)?;
    if waiting + records.len() as i64 > super::MAX_PENDING_FILES_PER_OWNER {
        return Err(ApiError::RateLimited {
            message: format!(
                "{waiting} files of your stores are waiting to be processed; at most {} may wait at once: attach these when some are done",
                super::MAX_PENDING_FILES_PER_OWNER
            ),
            code: "ingestion_queue",
            retry_after_s: 60,
        });
    }
    for r in &records {
        st.gw
            .store
            .add_store_file(r, batch)
            .await
            .map_err(store_error)?;
    }
    st.rag.wake.notify_waiters();
    Ok(())
}

/// A file named in a body: the caller's own, else 400 naming `file_id`
/// (the path's resource exists; the reference is wrong). Someone else's
/// file gets the same answer as one that does not exist.
async fn own_body_file(
    st: &Handle,
    id: &Identity,
    file_id: &str,
) -> Result<aula_store::FileRecord, ApiError> {
    own_file(&st.gw.store, id, file_id)
        .await
        .map_err(|e| match e {
            ApiError::NotFound(m) => ApiError::invalid_param("file_id", m),
            other => other,
        })
}

fn file_ids(v: Option<&Value>) -> Result<Vec<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(l)) if l.len() <= MAX_FILES_PER_CALL => l
            .iter()
            .map(|x| x.as_str().map(String::from))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ApiError::invalid_param("file_ids", "`file_ids` must be a list of file ids")
            }),
        Some(_) => Err(ApiError::invalid_param(
            "file_ids",
            format!("`file_ids` must be a list of at most {MAX_FILES_PER_CALL} file ids"),
        )),
    }
}

/// A store list's query: `limit` (1 to 100, default 20), `order`,
/// `after`, `before`, and for a store's files `filter` (a status).
fn page_query(q: Option<&str>, with_filter: bool) -> Result<Page, ApiError> {
    let keys: &'static [&'static str] = if with_filter {
        &["limit", "order", "after", "before", "filter"]
    } else {
        &["limit", "order", "after", "before"]
    };
    let p = Page::parse(
        q,
        &Takes {
            keys,
            default_limit: 20,
            max_limit: 100,
        },
    )?;
    if let Some(f) = &p.filter
        && FileStatus::parse(f).is_none()
    {
        return Err(ApiError::invalid_param(
            "filter",
            "`filter` must be in_progress, completed, failed or cancelled",
        ));
    }
    Ok(p)
}

/// One page of `items` (oldest first) by `key`.
fn paged<T>(mut items: Vec<(String, T)>, p: &Page) -> crate::wire::List<T> {
    if !p.ascending {
        items.reverse();
    }
    if let Some(a) = &p.after
        && let Some(i) = items.iter().position(|(k, _)| k == a)
    {
        items.drain(..=i);
    }
    if let Some(b) = &p.before
        && let Some(i) = items.iter().position(|(k, _)| k == b)
    {
        items.truncate(i);
    }
    let limit = usize::try_from(p.limit).unwrap_or(usize::MAX);
    let more = items.len() > limit;
    items.truncate(limit);
    crate::wire::List {
        object: "list",
        first_id: items.first().map(|(k, _)| k.clone()),
        last_id: items.last().map(|(k, _)| k.clone()),
        data: items.into_iter().map(|(_, v)| v).collect(),
        has_more: more,
    }
}

async fn files_page(st: &Handle, store_id: &str, batch: Option<&str>, p: &Page) -> Answer {
    let files = st
        .gw
        .store
        .store_files(store_id, batch)
        .await
        .map_err(store_error)?;
    let items = files
        .iter()
        .filter(|f| p.filter.as_ref().is_none_or(|s| f.status.as_str() == s))
        .map(|f| (f.file_id.clone(), VectorStoreFileObject::from(f)))
        .collect();
    ok(paged(items, p))
}
