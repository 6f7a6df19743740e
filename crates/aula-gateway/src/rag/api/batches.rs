//! `/v1/vector_stores/{id}/file_batches`: several files attached at once.

use super::super::Handle;
use super::*;
use crate::auth::Caller;
use crate::fields::{body_object, only, opt_str};
use crate::files::store_error;
use aula_protocol::ApiError;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};

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
        FileStatus::InProgress
    } else if counts.cancelled > 0 {
        FileStatus::Cancelled
    } else if counts.completed == 0 && counts.failed > 0 {
        FileStatus::Failed
    } else {
        FileStatus::Completed
    };
    ok(BatchObject {
        id: batch_id.to_string(),
        object: "vector_store.files_batch",
        created_at: files.iter().map(|f| f.created_ms).min().unwrap_or(0) / 1000,
        vector_store_id: store_id.to_string(),
        status,
        file_counts: counts,
    })
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
            .finish_store_file(&s.id, &f.file_id, FileStatus::Cancelled, None, None)
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
