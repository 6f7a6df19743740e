//! The HTTP handlers of `/v1/vector_stores` (OpenAI's shapes). Who may do
//! what is in the module above; every handler starts by authenticating and
//! finding the store as the caller may see it.

use super::Handle;
use super::{AUTO_MAX, AUTO_OVERLAP, MAX_STORES_PER_USER, STATIC_MAX, STATIC_MIN};
use crate::auth::Caller;
use crate::fields::{body_object, groups, only, opt_str};
use crate::files::{own_file, store_error};
use crate::identity::Identity;
use crate::page::{Page, Takes};
use aula_protocol::ApiError;
use aula_store::{StoreFileRecord, VectorStoreRecord, now_ms};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use serde_json::{Map, Value, json};

type Answer = Result<Json<Value>, ApiError>;

/// Most files one create or batch call attaches.
pub const MAX_FILES_PER_CALL: usize = 500;
/// Most query strings one search takes.
pub const MAX_QUERIES: usize = 10;

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

fn strategy_object(text: &str) -> Value {
    match serde_json::from_str::<aula_rag::Chunking>(text) {
        Ok(c) => {
            json!({"type": "static", "static": {"max_chunk_size_tokens": c.max_tokens, "chunk_overlap_tokens": c.overlap_tokens}})
        }
        Err(_) => json!({"type": "other"}),
    }
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

async fn store_object(st: &Handle, s: &VectorStoreRecord) -> Result<Value, ApiError> {
    let (counts, bytes) = st
        .gw
        .store
        .store_file_counts(&s.id, None)
        .await
        .map_err(store_error)?;
    Ok(json!({
        "id": s.id,
        "object": "vector_store",
        "created_at": s.created_ms / 1000,
        "name": s.name,
        "description": s.description,
        "usage_bytes": bytes,
        "file_counts": counts,
        "status": if counts.in_progress > 0 { "in_progress" } else { "completed" },
        // Stores do not expire: no `expires_after` (OpenAI's description
        // has no null for it), `expires_at` null (it has).
        "expires_at": null,
        "last_active_at": s.last_active_ms / 1000,
        "metadata": serde_json::from_str::<Value>(&s.metadata).unwrap_or(json!({})),
        "owner": s.owner,
        "shared_with_groups": s.shares,
    }))
}

fn file_object(f: &StoreFileRecord) -> Value {
    json!({
        "id": f.file_id,
        "object": "vector_store.file",
        "created_at": f.created_ms / 1000,
        "vector_store_id": f.store_id,
        "status": f.status,
        "usage_bytes": f.usage_bytes,
        "last_error": f.error_code.as_ref().map(|c| json!({"code": c, "message": f.error_message})),
        "attributes": serde_json::from_str::<Value>(&f.attributes).unwrap_or(json!({})),
        "chunking_strategy": strategy_object(&f.chunking),
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
            status: "in_progress".into(),
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

/// `POST /v1/vector_stores`.
pub async fn create(State(st): State<Handle>, Caller(id): Caller, body: Body) -> Answer {
    let o = body_object(body).await?;
    only(
        &o,
        &[
            "name",
            "description",
            "metadata",
            "chunking_strategy",
            "file_ids",
            "expires_after",
            "shared_with_groups",
        ],
    )?;
    refuse_expiry(&o)?;
    let name = opt_str(&o, "name", 256)?.unwrap_or("").to_string();
    let description = opt_str(&o, "description", 512)?.map(String::from);
    let metadata = metadata(o.get("metadata"))?.unwrap_or_else(|| "{}".into());
    let chunk = chunking(o.get("chunking_strategy"))?.unwrap_or(aula_rag::Chunking {
        max_tokens: AUTO_MAX,
        overlap_tokens: AUTO_OVERLAP,
    });
    let files = file_ids(o.get("file_ids"))?;
    let shares = groups(o.get("shared_with_groups"), &id, "a vector store")?.unwrap_or_default();
    // The count and the insert together: concurrent creates cannot pass the
    // cap (129 at once left 101 before). Creating stores is rare; one lock.
    let creating = st.rag.creating.lock().await;
    if st
        .gw
        .store
        .vector_stores_owned(&id.name)
        .await
        .map_err(store_error)?
        >= MAX_STORES_PER_USER
    {
        return Err(ApiError::RateLimited {
            message: format!(
                "you have {MAX_STORES_PER_USER} vector stores, the most one user may have; delete one first"
            ),
            code: "vector_store_quota",
            retry_after_s: 3600,
        });
    }
    for f in &files {
        own_body_file(&st, &id, f).await?;
    }
    let now = now_ms();
    let rec = VectorStoreRecord {
        id: format!("vs_{}", crate::random_id(24)),
        owner: id.name.clone(),
        owner_role: id.role,
        owner_groups: id.groups.clone(),
        name,
        description,
        metadata,
        chunking: chunking_json(chunk),
        generation: 0,
        created_ms: now,
        last_active_ms: now,
        shares,
    };
    st.gw
        .store
        .create_vector_store(&rec)
        .await
        .map_err(store_error)?;
    drop(creating);
    let files: Vec<_> = files.into_iter().map(|f| (f, None, None)).collect();
    attach(&st, &id, &rec, &files, None).await?;
    Ok(Json(store_object(&st, &rec).await?))
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
        && !matches!(
            f.as_str(),
            "in_progress" | "completed" | "failed" | "cancelled"
        )
    {
        return Err(ApiError::invalid_param(
            "filter",
            "`filter` must be in_progress, completed, failed or cancelled",
        ));
    }
    Ok(p)
}

/// One page of `items` (oldest first) by `key`.
fn paged(mut items: Vec<(String, Value)>, p: &Page) -> Value {
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
    json!({
        "object": "list",
        "data": items.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
        "first_id": items.first().map(|(k, _)| k.clone()),
        "last_id": items.last().map(|(k, _)| k.clone()),
        "has_more": more,
    })
}

/// `GET /v1/vector_stores`: the caller's own stores and those shared with
/// their groups.
pub async fn list(State(st): State<Handle>, Caller(id): Caller, RawQuery(q): RawQuery) -> Answer {
    let p = page_query(q.as_deref(), false)?;
    let stores = st
        .gw
        .store
        .vector_stores_visible(&id.name, &id.groups)
        .await
        .map_err(store_error)?;
    let mut items = Vec::with_capacity(stores.len());
    for s in &stores {
        items.push((s.id.clone(), store_object(&st, s).await?));
    }
    Ok(Json(paged(items, &p)))
}

/// `GET /v1/vector_stores/{id}`.
pub async fn retrieve(
    State(st): State<Handle>,
    Caller(id): Caller,
    Path(store_id): Path<String>,
) -> Answer {
    let s = visible(&st, &id, &store_id).await?;
    Ok(Json(store_object(&st, &s).await?))
}

/// `POST /v1/vector_stores/{id}`: name, metadata, shares.
pub async fn modify(
    State(st): State<Handle>,
    Caller(id): Caller,
    Path(store_id): Path<String>,
    body: Body,
) -> Answer {
    let s = owned(&st, &id, &store_id).await?;
    let o = body_object(body).await?;
    only(
        &o,
        &["name", "metadata", "expires_after", "shared_with_groups"],
    )?;
    refuse_expiry(&o)?;
    let name = opt_str(&o, "name", 256)?;
    let meta = metadata(o.get("metadata"))?;
    let shares = groups(o.get("shared_with_groups"), &id, "a vector store")?;
    st.gw
        .store
        .update_vector_store(&s.id, name, meta.as_deref(), shares.as_deref(), now_ms())
        .await
        .map_err(store_error)?;
    let s = visible(&st, &id, &store_id).await?;
    Ok(Json(store_object(&st, &s).await?))
}

/// `DELETE /v1/vector_stores/{id}` (the files stay in the Files API).
pub async fn delete(
    State(st): State<Handle>,
    Caller(id): Caller,
    Path(store_id): Path<String>,
) -> Answer {
    let s = owned(&st, &id, &store_id).await?;
    let deleted = st
        .gw
        .store
        .delete_vector_store(&s.id)
        .await
        .map_err(store_error)?;
    st.rag.forget(&s.id);
    Ok(Json(
        json!({"id": s.id, "object": "vector_store.deleted", "deleted": deleted}),
    ))
}

/// `POST /v1/vector_stores/{id}/files`.
pub async fn add_file(
    State(st): State<Handle>,
    Caller(id): Caller,
    Path(store_id): Path<String>,
    body: Body,
) -> Answer {
    let s = owned(&st, &id, &store_id).await?;
    let o = body_object(body).await?;
    only(&o, &["file_id", "attributes", "chunking_strategy"])?;
    let file_id = opt_str(&o, "file_id", 128)?
        .ok_or_else(|| ApiError::invalid_param("file_id", "`file_id` is required"))?
        .to_string();
    let attrs = attributes(o.get("attributes"))?;
    let c = chunking(o.get("chunking_strategy"))?;
    attach(&st, &id, &s, &[(file_id.clone(), attrs, c)], None).await?;
    let f = st
        .gw
        .store
        .store_file(&s.id, &file_id)
        .await
        .map_err(store_error)?;
    f.map(|f| Json(file_object(&f)))
        .ok_or_else(|| ApiError::NotFound(format!("no file `{file_id}`")))
}

/// `GET /v1/vector_stores/{id}/files`.
pub async fn list_files(
    State(st): State<Handle>,
    Caller(id): Caller,
    Path(store_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Answer {
    let s = visible(&st, &id, &store_id).await?;
    let p = page_query(q.as_deref(), true)?;
    files_page(&st, &s.id, None, &p).await
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
        .filter(|f| p.filter.as_ref().is_none_or(|s| &f.status == s))
        .map(|f| (f.file_id.clone(), file_object(f)))
        .collect();
    Ok(Json(paged(items, p)))
}

async fn store_file(
    st: &Handle,
    id: &Identity,
    store_id: &str,
    file_id: &str,
    write: bool,
) -> Result<StoreFileRecord, ApiError> {
    let s = if write {
        owned(st, id, store_id).await?
    } else {
        visible(st, id, store_id).await?
    };
    st.gw
        .store
        .store_file(&s.id, file_id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no file `{file_id}` in the vector store `{store_id}`"
            ))
        })
}

/// `GET /v1/vector_stores/{id}/files/{file_id}`.
pub async fn get_file(
    State(st): State<Handle>,
    Caller(id): Caller,
    Path((store_id, file_id)): Path<(String, String)>,
) -> Answer {
    Ok(Json(file_object(
        &store_file(&st, &id, &store_id, &file_id, false).await?,
    )))
}

/// `POST /v1/vector_stores/{id}/files/{file_id}`: new attributes.
pub async fn update_file(
    State(st): State<Handle>,
    Caller(id): Caller,
    Path((store_id, file_id)): Path<(String, String)>,
    body: Body,
) -> Answer {
    let f = store_file(&st, &id, &store_id, &file_id, true).await?;
    let o = body_object(body).await?;
    only(&o, &["attributes"])?;
    let attrs = attributes(o.get("attributes"))?.unwrap_or_else(|| "{}".into());
    st.gw
        .store
        .set_store_file_attributes(&f.store_id, &f.file_id, &attrs)
        .await
        .map_err(store_error)?;
    Ok(Json(file_object(
        &store_file(&st, &id, &store_id, &file_id, false).await?,
    )))
}

/// `DELETE /v1/vector_stores/{id}/files/{file_id}`: detached, chunks
/// removed; the file stays in the Files API.
pub async fn remove_file(
    State(st): State<Handle>,
    Caller(id): Caller,
    Path((store_id, file_id)): Path<(String, String)>,
) -> Answer {
    let f = store_file(&st, &id, &store_id, &file_id, true).await?;
    let deleted = st
        .gw
        .store
        .remove_store_file(&f.store_id, &f.file_id)
        .await
        .map_err(store_error)?;
    Ok(Json(
        json!({"id": f.file_id, "object": "vector_store.file.deleted", "deleted": deleted}),
    ))
}

async fn batch_object(st: &Handle, store_id: &str, batch_id: &str) -> Answer {
    let files = st
        .gw
        .store
        .store_files(store_id, Some(batch_id))
        .await
        .map_err(store_error)?;
    if files.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no file batch `{batch_id}` in the vector store `{store_id}`"
        )));
    }
    let (counts, _) = st
        .gw
        .store
        .store_file_counts(store_id, Some(batch_id))
        .await
        .map_err(store_error)?;
    let status = if counts.in_progress > 0 {
        "in_progress"
    } else if counts.cancelled > 0 {
        "cancelled"
    } else if counts.completed == 0 && counts.failed > 0 {
        "failed"
    } else {
        "completed"
    };
    Ok(Json(json!({
        "id": batch_id,
        "object": "vector_store.files_batch",
        "created_at": files.iter().map(|f| f.created_ms).min().unwrap_or(0) / 1000,
        "vector_store_id": store_id,
        "status": status,
        "file_counts": counts,
    })))
}

/// `POST /v1/vector_stores/{id}/file_batches`: `file_ids` (with shared
/// `attributes` and `chunking_strategy`) or `files` (each with its own).
pub async fn create_batch(
    State(st): State<Handle>,
    Caller(id): Caller,
    Path(store_id): Path<String>,
    body: Body,
) -> Answer {
    let s = owned(&st, &id, &store_id).await?;
    let o = body_object(body).await?;
    only(
        &o,
        &["file_ids", "files", "attributes", "chunking_strategy"],
    )?;
    let attrs = attributes(o.get("attributes"))?;
    let c = chunking(o.get("chunking_strategy"))?;
    let mut files: Vec<_> = file_ids(o.get("file_ids"))?
        .into_iter()
        .map(|f| (f, attrs.clone(), c))
        .collect();
    if let Some(list) = o.get("files").filter(|v| !v.is_null()) {
        let list = list
            .as_array()
            .filter(|l| l.len() + files.len() <= MAX_FILES_PER_CALL)
            .ok_or_else(|| {
                ApiError::invalid_param(
                    "files",
                    format!("`files` must be a list of at most {MAX_FILES_PER_CALL} objects"),
                )
            })?;
        for f in list {
            let fo = f.as_object().ok_or_else(|| {
                ApiError::invalid_param(
                    "files",
                    "each of `files` must be an object with a `file_id`",
                )
            })?;
            only(fo, &["file_id", "attributes", "chunking_strategy"])?;
            let fid = opt_str(fo, "file_id", 128)?.ok_or_else(|| {
                ApiError::invalid_param("files", "each of `files` needs a `file_id`")
            })?;
            files.push((
                fid.to_string(),
                attributes(fo.get("attributes"))?.or(attrs.clone()),
                chunking(fo.get("chunking_strategy"))?.or(c),
            ));
        }
    }
    if files.is_empty() {
        return Err(ApiError::invalid_param(
            "file_ids",
            "a batch needs `file_ids` or `files`",
        ));
    }
    let batch = format!("vsfb_{}", crate::random_id(24));
    attach(&st, &id, &s, &files, Some(&batch)).await?;
    batch_object(&st, &s.id, &batch).await
}

/// `GET /v1/vector_stores/{id}/file_batches/{batch_id}`.
pub async fn get_batch(
    State(st): State<Handle>,
    Caller(id): Caller,
    Path((store_id, batch_id)): Path<(String, String)>,
) -> Answer {
    let s = visible(&st, &id, &store_id).await?;
    batch_object(&st, &s.id, &batch_id).await
}

/// `POST /v1/vector_stores/{id}/file_batches/{batch_id}/cancel`: files not
/// yet ingested become `cancelled`.
pub async fn cancel_batch(
    State(st): State<Handle>,
    Caller(id): Caller,
    Path((store_id, batch_id)): Path<(String, String)>,
) -> Answer {
    let s = owned(&st, &id, &store_id).await?;
    for f in st
        .gw
        .store
        .store_files(&s.id, Some(&batch_id))
        .await
        .map_err(store_error)?
    {
        st.gw
            .store
            .finish_store_file(&s.id, &f.file_id, "cancelled", None, None)
            .await
            .map_err(store_error)?;
    }
    batch_object(&st, &s.id, &batch_id).await
}

/// `GET /v1/vector_stores/{id}/file_batches/{batch_id}/files`.
pub async fn batch_files(
    State(st): State<Handle>,
    Caller(id): Caller,
    Path((store_id, batch_id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Answer {
    let s = visible(&st, &id, &store_id).await?;
    let p = page_query(q.as_deref(), true)?;
    files_page(&st, &s.id, Some(&batch_id), &p).await
}

/// A search's parameters, shared by `/search` and `file_search`.
pub(crate) struct SearchParams {
    pub queries: Vec<String>,
    pub filter: Option<aula_rag::Filter>,
    pub k: usize,
    pub threshold: Option<f32>,
    pub mode: aula_rag::Mode,
}

pub(crate) fn search_params(
    o: &Map<String, Value>,
    query_key: &str,
    k_key: &str,
) -> Result<SearchParams, ApiError> {
    let queries = match o.get(query_key) {
        Some(Value::String(s)) if !s.trim().is_empty() => vec![s.clone()],
        Some(Value::Array(l)) if !l.is_empty() && l.len() <= MAX_QUERIES => l
            .iter()
            .map(|q| {
                q.as_str()
                    .filter(|s| !s.trim().is_empty())
                    .map(String::from)
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                ApiError::invalid_param(
                    query_key,
                    format!("`{query_key}` must be non-empty strings"),
                )
            })?,
        _ => {
            return Err(ApiError::invalid_param(
                query_key,
                format!(
                    "`{query_key}` must be a non-empty string or a list of 1 to {MAX_QUERIES} strings"
                ),
            ));
        }
    };
    let filter = match o.get("filters") {
        None | Some(Value::Null) => None,
        Some(f) => {
            Some(aula_rag::Filter::parse(f).map_err(|m| ApiError::invalid_param("filters", m))?)
        }
    };
    let k =
        match o.get(k_key) {
            None | Some(Value::Null) => 10,
            Some(v) => v.as_u64().filter(|n| (1..=50).contains(n)).ok_or_else(|| {
                ApiError::invalid_param(k_key, format!("`{k_key}` must be 1 to 50"))
            })? as usize,
        };
    let mut threshold = None;
    if let Some(r) = o.get("ranking_options").filter(|v| !v.is_null()) {
        let ro = r.as_object().ok_or_else(|| {
            ApiError::invalid_param("ranking_options", "`ranking_options` must be an object")
        })?;
        only(ro, &["ranker", "score_threshold"])?;
        if let Some(rk) = ro.get("ranker")
            && !matches!(rk.as_str(), Some("auto" | "none" | "default-2024-11-15"))
        {
            return Err(ApiError::invalid_param(
                "ranking_options",
                "`ranker` must be auto, none or default-2024-11-15",
            ));
        }
        if let Some(t) = ro.get("score_threshold") {
            threshold = Some(
                t.as_f64()
                    .filter(|t| (0.0..=1.0).contains(t))
                    .ok_or_else(|| {
                        ApiError::invalid_param(
                            "ranking_options",
                            "`score_threshold` must be 0 to 1",
                        )
                    })? as f32,
            );
        }
    }
    let mode = match o.get("search_mode") {
        None | Some(Value::Null) => aula_rag::Mode::Hybrid,
        Some(v) => v.as_str().and_then(aula_rag::Mode::parse).ok_or_else(|| {
            ApiError::invalid_param(
                "search_mode",
                "`search_mode` must be hybrid, dense or lexical",
            )
        })?,
    };
    Ok(SearchParams {
        queries,
        filter,
        k,
        threshold,
        mode,
    })
}

/// `POST /v1/vector_stores/{id}/search`.
pub async fn search(
    State(st): State<Handle>,
    Caller(id): Caller,
    Path(store_id): Path<String>,
    body: Body,
) -> Answer {
    let s = visible(&st, &id, &store_id).await?;
    let o = body_object(body).await?;
    only(
        &o,
        &[
            "query",
            "filters",
            "max_num_results",
            "ranking_options",
            "rewrite_query",
            "search_mode",
        ],
    )?;
    if o.get("rewrite_query").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::invalid_param(
            "rewrite_query",
            "Aula does not rewrite queries; leave out `rewrite_query` or set it to false",
        ));
    }
    let p = search_params(&o, "query", "max_num_results")?;
    let found = super::search::search(
        &st,
        &id,
        std::slice::from_ref(&s.id),
        &super::search::Request {
            queries: &p.queries,
            mode: p.mode,
            filter: p.filter.as_ref(),
            k: p.k,
            threshold: p.threshold,
        },
    )
    .await?;
    let data: Vec<Value> = found
        .iter()
        .map(|f| {
            json!({
                "file_id": f.file_id,
                "filename": f.filename,
                "score": f.score,
                "attributes": f.attributes,
                "content": [{"type": "text", "text": f.text}],
            })
        })
        .collect();
    Ok(Json(json!({
        "object": "vector_store.search_results.page",
        "search_query": p.queries,
        "data": data,
        "has_more": false,
        "next_page": null,
    })))
}
