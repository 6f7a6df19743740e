//! `/keys`: one's own API keys; creating and revoking them.

use super::super::{Handle, Visitor, redirect};
use super::*;
use crate::identity::Identity;
use aula_store::Role;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use minijinja::context;

/// Does `id` own this key, or may manage it (staff: students' keys; admins: all)?
async fn may_manage_key(st: &Handle, v: &Visitor, id: &Identity, key_id: &str) -> bool {
    let Ok(keys) = st.gw.store.keys(None).await else {
        return false;
    };
    let Some(k) = keys.iter().find(|k| k.id == key_id) else {
        return false;
    };
    if k.user == id.name {
        return true;
    }
    if v.admin() {
        return true;
    }
    if v.staff()
        && let Ok(Some(owner)) = st.gw.store.user(&k.user).await
    {
        return owner.role == Role::Student;
    }
    false
}

async fn keys_page(
    st: &Handle,
    v: &Visitor,
    id: &Identity,
    created: Option<(String, String)>,
    error: Option<String>,
) -> Response {
    if v.open || id.via != crate::identity::Via::Key {
        // Keys belong to Aula users; a Hub user's credential is the Hub's.
        let keys = st.gw.store.keys(Some(&id.name)).await.unwrap_or_default();
        return v.render(
            st,
            StatusCode::OK,
            "keys.html",
            "keys",
            context! { title => "My keys", keys => keys, can_create => false, hub_user => id.via == crate::identity::Via::JupyterHub },
        );
    }
    let keys = st.gw.store.keys(Some(&id.name)).await.unwrap_or_default();
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    v.render(
        st,
        status,
        "keys.html",
        "keys",
        context! {
            title => "My keys",
            keys => keys,
            can_create => true,
            created_id => created.as_ref().map(|c| c.0.clone()),
            created_secret => created.map(|c| c.1),
            error => error,
        },
    )
}

/// `/keys`: the visitor's own keys.
pub async fn keys(State(st): State<Handle>, headers: HeaderMap) -> Response {
    let v = page!(Visitor::of(&st, &headers).await);
    let id = page!(v.require(&st, "/keys")).clone();
    keys_page(&st, &v, &id, None, None).await
}

pub(super) fn expires_days(f: &Fields) -> Result<Option<f64>, String> {
    match f
        .get("expires_days")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        None => Ok(None),
        Some(s) => match s.parse::<f64>() {
            Ok(d) if d > 0.0 && d <= 3650.0 => Ok(Some(d)),
            _ => Err(format!(
                "“{s}” is not a number of days between 0 and 3650; leave it empty for a key that does not expire"
            )),
        },
    }
}

/// `POST /keys`: a new key of the visitor's own, shown once.
pub async fn create_key(State(st): State<Handle>, headers: HeaderMap, body: Bytes) -> Response {
    let (v, f) = page!(Visitor::post(&st, &headers, &body).await);
    let id = page!(v.require(&st, "/keys")).clone();
    if v.open || id.via != crate::identity::Via::Key {
        return v.error(
            &st,
            StatusCode::FORBIDDEN,
            "Keys are for Aula users; sign in with an Aula key to make more.",
        );
    }
    let days = match expires_days(&f) {
        Ok(d) => d,
        Err(e) => return keys_page(&st, &v, &id, None, Some(e)).await,
    };
    match st.gw.store.create_key(&id.name, days).await {
        Ok((info, secret)) => keys_page(&st, &v, &id, Some((info.id, secret)), None).await,
        Err(e) => keys_page(&st, &v, &id, None, Some(e.to_string())).await,
    }
}

/// `POST /keys/{id}/revoke`: one's own key; staff also students' keys, admins any.
pub async fn revoke_key(
    State(st): State<Handle>,
    headers: HeaderMap,
    Path(key_id): Path<String>,
    body: Bytes,
) -> Response {
    let (v, f) = page!(Visitor::post(&st, &headers, &body).await);
    let id = page!(v.require(&st, "/keys")).clone();
    if !may_manage_key(&st, &v, &id, &key_id).await {
        // The same answer whether the key exists or not.
        return v.error(&st, StatusCode::NOT_FOUND, "You have no such key.");
    }
    if let Err(e) = st.gw.store.revoke_key(&key_id).await {
        return v.error(&st, StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
    }
    let back = match f.get("back").map(String::as_str) {
        Some("users") if v.staff() => "/users",
        _ => "/keys",
    };
    v.finish(&st, redirect(&format!("{}{back}", st.web.base)))
}
