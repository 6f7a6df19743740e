//! `/v1/vector_stores/{id}/files`: a store's files, attached, listed, updated, removed.

use super::super::Handle;
use super::*;
use crate::auth::Caller;
use crate::fields::{body_object, only, opt_str};
use crate::files::store_error;
use crate::identity::Identity;
use aula_protocol::ApiError;
use aula_store::StoreFileRecord;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};

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
    match f {
        Some(f) => ok(VectorStoreFileObject::from(&f)),
        None => Err(ApiError::NotFound(format!("no file `{file_id}`"))),
    }
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
    ok(VectorStoreFileObject::from(
        &store_file(&st, &id, &store_id, &file_id, false).await?,
    ))
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
    ok(VectorStoreFileObject::from(
        &store_file(&st, &id, &store_id, &file_id, false).await?,
    ))
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
    ok(crate::wire::Deleted {
        id: f.file_id,
        object: "vector_store.file.deleted",
        deleted,
    })
}
