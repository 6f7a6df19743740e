//! `/v1/vector_stores` and `/v1/vector_stores/{id}`: the stores themselves.

use super::super::Handle;
use super::super::{AUTO_MAX, AUTO_OVERLAP, MAX_STORES_PER_USER};
use super::*;
use crate::auth::Caller;
use crate::fields::{body_object, groups, only, opt_str};
use crate::files::store_error;
use aula_protocol::ApiError;
use aula_store::{VectorStoreRecord, now_ms};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};

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
    ok(store_object(&st, &rec).await?)
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
    ok(paged(items, &p))
}

/// `GET /v1/vector_stores/{id}`.
pub async fn retrieve(
    State(st): State<Handle>,
    Caller(id): Caller,
    Path(store_id): Path<String>,
) -> Answer {
    let s = visible(&st, &id, &store_id).await?;
    ok(store_object(&st, &s).await?)
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
    ok(store_object(&st, &s).await?)
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
    ok(crate::wire::Deleted {
        id: s.id,
        object: "vector_store.deleted",
        deleted,
    })
}
