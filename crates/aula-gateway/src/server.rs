//! The gateway's HTTP API: the request path is
//! handler -> (peek model) -> router -> backend (engine client).

use crate::router::ModelRouter;
use aula_protocol::ApiError;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use serde_json::json;
use std::future::Future;
use std::sync::Arc;

pub struct GatewayState {
    pub router: ModelRouter,
}

pub fn app(state: Arc<GatewayState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(|| async { ApiError::NotFound("no such route; the API is under /v1".into()) })
        .with_state(state)
}

/// Serve on `listener` until `shutdown` resolves.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: Arc<GatewayState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // No Nagle delay: streamed tokens leave as soon as they arrive.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn chat(State(st): State<Arc<GatewayState>>, body: Bytes) -> Response {
    forward(&st, "/v1/chat/completions", body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn completions(State(st): State<Arc<GatewayState>>, body: Bytes) -> Response {
    forward(&st, "/v1/completions", body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn forward(st: &GatewayState, path: &'static str, body: Bytes) -> Result<Response, ApiError> {
    let (model, _stream) = aula_protocol::peek_route(&body)?;
    let backend = st.router.get(&model)?;
    backend.forward(path, body).await
}

async fn models(State(st): State<Arc<GatewayState>>) -> Response {
    axum::Json(aula_protocol::model_list(st.router.names(), "aula")).into_response()
}

async fn readyz(State(st): State<Arc<GatewayState>>) -> Response {
    let models: serde_json::Map<String, serde_json::Value> = st
        .router
        .iter()
        .map(|(name, b)| (name.clone(), json!({"ready": b.address().is_some()})))
        .collect();
    let ready = models.values().all(|v| v["ready"] == true);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({"ready": ready, "models": models})),
    )
        .into_response()
}
