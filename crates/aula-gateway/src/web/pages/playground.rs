//! `/playground`: chat and search course material as the signed-in user, through the API's own path.

use super::super::{Handle, Visitor};
use crate::identity::Identity;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use minijinja::context;

/// `/playground`: chat with a model the visitor may use, streamed.
pub async fn playground(State(st): State<Handle>, headers: HeaderMap) -> Response {
    let v = page!(Visitor::of(&st, &headers).await);
    let id = page!(v.require(&st, "/playground")).clone();
    let chat: Vec<String> = st
        .gw
        .visible_models(&id)
        .into_iter()
        .filter(|m| st.gw.router.get(m).is_ok_and(|r| !r.embedding))
        .collect();
    let public = st.web.settings.public_url.clone().unwrap_or_else(|| {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1");
        format!("http://{host}")
    });
    let stores: Vec<_> = st
        .gw
        .store
        .vector_stores_visible(&id.name, &id.groups)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|s| context! { id => s.id, name => s.name })
        .collect();
    v.render(
        &st,
        StatusCode::OK,
        "playground.html",
        "playground",
        context! {
            title => "Playground",
            stores => stores,
            models => chat,
            api_base => format!("{}/v1", public.trim_end_matches('/')),
        },
    )
}

/// The playground's caller: signed in, the CSRF header right, the body read
/// (refusals as the API's JSON errors, which the page's script shows).
async fn playground_caller(
    st: &Handle,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Identity, Bytes), Response> {
    let v = Visitor::of(st, headers).await?;
    let Some(id) = v.id.clone() else {
        return Err(aula_protocol::ApiError::Unauthorized(
            "your session has ended; sign in again".into(),
        )
        .into_response());
    };
    if v.check_post(st, headers, None).is_err() {
        return Err(aula_protocol::ApiError::Forbidden {
            message: "not sent from this site's playground".into(),
            code: "csrf",
            resets_at: None,
        }
        .into_response());
    }
    let body = crate::body::read_json(body)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok((id, body))
}

/// `POST /playground/chat`: a chat completion (JSON body, CSRF header) as the
/// signed-in user, through the same pipeline as `/v1/chat/completions`.
pub async fn playground_chat(State(st): State<Handle>, headers: HeaderMap, body: Body) -> Response {
    let (id, body) = page!(playground_caller(&st, &headers, body).await);
    crate::pipeline::call(
        st.gw.clone(),
        "/v1/chat/completions",
        &id,
        crate::pipeline::Sent::Read(body),
        std::time::Instant::now(),
    )
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /playground/responses`: the playground searching course material
/// (`file_search` over the stores the user may search), as the signed-in
/// user, through the same `/v1/responses` path as the API.
pub async fn playground_responses(
    State(st): State<Handle>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (id, body) = page!(playground_caller(&st, &headers, body).await);
    crate::responses::respond(st.responses.clone(), &id, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}
