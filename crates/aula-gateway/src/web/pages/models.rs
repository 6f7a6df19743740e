//! `POST /models/{model}/load|unload` (admins).

use super::super::{Handle, Visitor, redirect};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;

/// `POST /models/{model}/load|unload` (admins).
pub async fn model_action(
    State(st): State<Handle>,
    headers: HeaderMap,
    Path((model, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let (v, _) = page!(Visitor::post(&st, &headers, &body).await);
    page!(v.require(&st, "/"));
    if !v.admin() {
        return v.error(
            &st,
            StatusCode::FORBIDDEN,
            "Only an admin may load and unload models.",
        );
    }
    let done = match action.as_str() {
        "load" => st.gw.fleet.load(&model).await,
        "unload" => st.gw.fleet.unload(&model).await,
        _ => return v.error(&st, StatusCode::NOT_FOUND, "No such action."),
    };
    match done {
        Ok(()) => v.finish(&st, redirect(&format!("{}/", st.web.base))),
        Err(e) => v.error(&st, e.status(), &e.to_string()),
    }
}
