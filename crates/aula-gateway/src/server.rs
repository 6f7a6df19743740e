//! The gateway's HTTP API. The request path of a completion is in
//! [`crate::pipeline`]: authentication -> limits -> fair queue -> router's
//! backend (engine client). Errors become HTTP responses in one place,
//! [`aula_protocol::ApiError`].

use crate::pipeline::Gateway;
use crate::rag::api as rag;
use crate::state::GatewayState;
use aula_protocol::ApiError;
use aula_protocol::admin::{ModelAnswer, ModelState, Ps};
use aula_store::Role;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use serde_json::json;
use std::future::Future;
use std::sync::Arc;

/// The OpenAPI 3.1 description of every route below, served at `/openapi.json`.
/// Aula parses request bodies by hand (for exact, OpenAI-style errors), so
/// the wire shapes are described here as data rather than derived from
/// Rust types; `routes()` and this document are checked against each other.
pub const OPENAPI: &str = include_str!("openapi.json");

type Route = (&'static str, &'static str, MethodRouter<GatewayState>);

/// Every route, once: (method, path, handler). The router is built from
/// this table, and a test holds it equal to [`OPENAPI`]'s paths.
fn routes() -> Vec<Route> {
    vec![
        ("POST", "/v1/chat/completions", post(chat)),
        ("POST", "/v1/completions", post(completions)),
        ("POST", "/v1/embeddings", post(embeddings)),
        ("GET", "/v1/models", get(models)),
        ("POST", "/v1/files", post(crate::files::upload)),
        ("GET", "/v1/files", get(crate::files::list)),
        ("GET", "/v1/files/{file_id}", get(crate::files::retrieve)),
        (
            "DELETE",
            "/v1/files/{file_id}",
            delete(crate::files::delete),
        ),
        (
            "GET",
            "/v1/files/{file_id}/content",
            get(crate::files::content),
        ),
        ("POST", "/v1/vector_stores", post(rag::create)),
        ("GET", "/v1/vector_stores", get(rag::list)),
        (
            "GET",
            "/v1/vector_stores/{vector_store_id}",
            get(rag::retrieve),
        ),
        (
            "POST",
            "/v1/vector_stores/{vector_store_id}",
            post(rag::modify),
        ),
        (
            "DELETE",
            "/v1/vector_stores/{vector_store_id}",
            delete(rag::delete),
        ),
        (
            "POST",
            "/v1/vector_stores/{vector_store_id}/files",
            post(rag::add_file),
        ),
        (
            "GET",
            "/v1/vector_stores/{vector_store_id}/files",
            get(rag::list_files),
        ),
        (
            "GET",
            "/v1/vector_stores/{vector_store_id}/files/{file_id}",
            get(rag::get_file),
        ),
        (
            "POST",
            "/v1/vector_stores/{vector_store_id}/files/{file_id}",
            post(rag::update_file),
        ),
        (
            "DELETE",
            "/v1/vector_stores/{vector_store_id}/files/{file_id}",
            delete(rag::remove_file),
        ),
        (
            "POST",
            "/v1/vector_stores/{vector_store_id}/file_batches",
            post(rag::create_batch),
        ),
        (
            "GET",
            "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}",
            get(rag::get_batch),
        ),
        (
            "POST",
            "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel",
            post(rag::cancel_batch),
        ),
        (
            "GET",
            "/v1/vector_stores/{vector_store_id}/file_batches/{batch_id}/files",
            get(rag::batch_files),
        ),
        (
            "POST",
            "/v1/vector_stores/{vector_store_id}/search",
            post(rag::search),
        ),
        ("POST", "/v1/responses", post(crate::responses::create)),
        (
            "POST",
            "/v1/fine_tuning/jobs",
            post(crate::finetune::api::create),
        ),
        (
            "GET",
            "/v1/fine_tuning/jobs",
            get(crate::finetune::api::list),
        ),
        (
            "GET",
            "/v1/fine_tuning/jobs/{fine_tuning_job_id}",
            get(crate::finetune::api::retrieve),
        ),
        (
            "POST",
            "/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel",
            post(crate::finetune::api::cancel),
        ),
        (
            "GET",
            "/v1/fine_tuning/jobs/{fine_tuning_job_id}/events",
            get(crate::finetune::api::events),
        ),
        (
            "GET",
            "/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints",
            get(crate::finetune::api::checkpoints),
        ),
        ("GET", "/v1/models/{model}", get(model)),
        (
            "DELETE",
            "/v1/models/{model}",
            delete(crate::finetune::api::delete_model),
        ),
        ("GET", "/healthz", get(|| async { "ok" })),
        ("GET", "/readyz", get(readyz)),
        ("GET", "/metrics", get(metrics)),
        ("GET", "/openapi.json", get(openapi)),
        ("POST", "/admin/reload", post(reload)),
        ("GET", "/admin/ps", get(ps)),
        ("POST", "/admin/load/{model}", post(load)),
        ("POST", "/admin/unload/{model}", post(unload)),
    ]
}

pub fn app(state: GatewayState) -> Router {
    let mut router = Router::new();
    for (_, path, handler) in routes() {
        router = router.route(path, handler);
    }
    router
        .merge(crate::web::routes())
        .fallback(|| async { ApiError::NotFound("no such route; the API is under /v1".into()) })
        .with_state(state)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Serve on `listener` until `shutdown` resolves.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: GatewayState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::metrics::handle();
    crate::metrics::describe();
    for (name, route) in state.gw.router.iter() {
        crate::metrics::slots(name, route.queue.stats().slots);
    }
    let closing = state.gw.closing.clone();
    let shutdown = async move {
        shutdown.await;
        closing.cancel();
    };
    serve_connections(listener, app(state), shutdown).await
}

/// Most client connections open at once; more are closed as they arrive.
pub const MAX_CONNECTIONS: usize = 4096;
/// How long a client may take to send a request's headers.
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The connections the gateway lets clients hold: [`MAX_CONNECTIONS`], or
/// half the file descriptors this process may open (raised to the hard
/// limit first), so that engines, logs and the database always find one.
pub fn connection_cap() -> usize {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: get/setrlimit with a valid struct only affect this process.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                if lim.rlim_cur < lim.rlim_max {
                    let raised = libc::rlimit {
                        rlim_cur: lim.rlim_max,
                        rlim_max: lim.rlim_max,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                        lim = raised;
                    }
                }
                let half = usize::try_from(lim.rlim_cur / 2).unwrap_or(MAX_CONNECTIONS);
                return MAX_CONNECTIONS.min(half.max(16));
            }
        }
    }
    MAX_CONNECTIONS
}

/// The accept loop: at most [`connection_cap`] connections, each given
/// [`HEADER_TIMEOUT`] to send its headers (a client dripping them is cut
/// off), no Nagle delay (streamed tokens leave as they arrive); on
/// `shutdown`, stop accepting and let open requests finish (up to 30 s).
pub async fn serve_connections(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let limit = Arc::new(tokio::sync::Semaphore::new(connection_cap()));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // HTTP/1 only: its header timer also closes idle keep-alive connections,
    // which an HTTP/2 connection (no such timer) could hold open forever.
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            crate::metrics::connection_refused();
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let svc = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), graceful.shutdown()).await;
    Ok(())
}

async fn chat(State(st): State<Arc<Gateway>>, headers: HeaderMap, body: Body) -> Response {
    crate::pipeline::handle(st, "/v1/chat/completions", headers, body).await
}

async fn completions(State(st): State<Arc<Gateway>>, headers: HeaderMap, body: Body) -> Response {
    crate::pipeline::handle(st, "/v1/completions", headers, body).await
}

async fn embeddings(State(st): State<Arc<Gateway>>, headers: HeaderMap, body: Body) -> Response {
    crate::pipeline::handle(st, "/v1/embeddings", headers, body).await
}

async fn models(State(st): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    match st.auth.authenticate(&headers).await {
        Ok(id) => {
            let names = st.visible_models(&id);
            let mut list = aula_protocol::model_list(&names, "aula");
            // Fine-tuned models: their owner's (and shared groups'), as OpenAI lists them.
            if let Some(data) = list["data"].as_array_mut() {
                for (name, t) in st.tuned.models_for(&id) {
                    data.push(serde_json::json!({
                        "id": name, "object": "model", "created": t.created_ms / 1000,
                        "owned_by": t.owner, "root": t.base,
                    }));
                }
            }
            axum::Json(list).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// One model the caller may use (a configured one, or a fine-tuned one
/// theirs or shared with them); 404 for any other.
async fn model(
    State(st): State<Arc<Gateway>>,
    headers: HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    let id = match st.auth.authenticate(&headers).await {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    if st.visible_models(&id).contains(&name) {
        return axum::Json(
            serde_json::json!({"id": name, "object": "model", "created": 0, "owned_by": "aula"}),
        )
        .into_response();
    }
    match st.tuned.model_for(&name, &id) {
        Some(t) => axum::Json(serde_json::json!({
            "id": name, "object": "model", "created": t.created_ms / 1000,
            "owned_by": t.owner, "root": t.base,
        }))
        .into_response(),
        None => {
            ApiError::ModelNotFound(format!("the model `{name}` does not exist or is not yours"))
                .into_response()
        }
    }
}

/// Prometheus metrics name every model and count every refusal: with
/// authentication on, only staff (teachers and admins) may read them —
/// Prometheus sends a teacher's key as `authorization: {credentials: KEY}`.
async fn metrics(State(st): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(e) = require_staff(&st, &headers).await {
        return e.into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::render(),
    )
        .into_response()
}

/// Teachers and admins; with no authentication configured (loopback), anyone.
async fn require_staff(st: &Gateway, headers: &HeaderMap) -> Result<(), ApiError> {
    if !st.auth.auth_configured() {
        return Ok(());
    }
    let id = st.auth.authenticate(headers).await?;
    if matches!(id.role, Role::Admin | Role::Teacher) {
        Ok(())
    } else {
        Err(ApiError::Forbidden {
            message: "only a teacher or an admin may read this".into(),
            code: "staff_only",
            resets_at: None,
        })
    }
}

/// Admins only: an admin's key, or the local admin token (`aula ps|load|
/// unload` send it) — also with no authentication configured, where every
/// local account would otherwise be an admin.
async fn require_admin(st: &Gateway, headers: &HeaderMap) -> Result<(), ApiError> {
    let id = st.auth.authenticate(headers).await?;
    if id.role == Role::Admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden {
            message: "only an admin may do this".into(),
            code: "admin_only",
            resets_at: None,
        })
    }
}

async fn ps(State(st): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(e) = require_admin(&st, &headers).await {
        return e.into_response();
    }
    let (requests_in_flight, reserved_tokens) = st.limiter.in_flight();
    axum::Json(Ps {
        budget_bytes: st.fleet.budget_bytes(),
        models: st.fleet.ps(),
        requests_in_flight,
        reserved_tokens,
        holds: st.fleet.holds(),
        fine_tuning: st
            .store
            .ft_jobs_in(&aula_store::JobStatus::UNFINISHED)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|j| aula_protocol::admin::JobRow {
                id: j.id,
                user: j.owner,
                model: j.base_model,
                status: j.status.to_string(),
                planned_bytes: j.planned_bytes.max(0) as u64,
            })
            .collect(),
    })
    .into_response()
}

async fn load(
    State(st): State<Arc<Gateway>>,
    headers: HeaderMap,
    axum::extract::Path(model): axum::extract::Path<String>,
) -> Response {
    if let Err(e) = require_admin(&st, &headers).await {
        return e.into_response();
    }
    match st.fleet.load(&model).await {
        Ok(()) => axum::Json(ModelAnswer {
            model,
            state: ModelState::Ready,
        })
        .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn unload(
    State(st): State<Arc<Gateway>>,
    headers: HeaderMap,
    axum::extract::Path(model): axum::extract::Path<String>,
) -> Response {
    if let Err(e) = require_admin(&st, &headers).await {
        return e.into_response();
    }
    match st.fleet.unload(&model).await {
        Ok(()) => axum::Json(ModelAnswer {
            model,
            state: ModelState::Unloaded,
        })
        .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn reload(State(st): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Err(e) = require_admin(&st, &headers).await {
        return e.into_response();
    }
    match st.reload_limits() {
        Ok(n) => axum::Json(json!({"reloaded": true, "limit_rules": n})).into_response(),
        Err(e) => ApiError::invalid(e).into_response(),
    }
}

/// Ready when every loaded model's engine is up. Anyone may ask (load
/// balancers do, without keys); the per-model detail — which names every
/// model, group-restricted ones too — only staff see when authentication is on.
async fn readyz(State(st): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let detail = require_staff(&st, &headers).await.is_ok();
    // One snapshot of the fleet; a model that is not loaded (on demand) is
    // not a reason to be unready.
    let unloaded: std::collections::HashSet<String> = st
        .fleet
        .ps()
        .into_iter()
        .filter(|p| p.state == ModelState::Unloaded)
        .map(|p| p.model)
        .collect();
    let models: serde_json::Map<String, serde_json::Value> = st
        .router
        .iter()
        .map(|(name, r)| {
            let q = r.queue.stats();
            let loaded = !unloaded.contains(name);
            (
                name.clone(),
                json!({"ready": r.backend.address().is_some(), "loaded": loaded, "slots": q.slots, "busy": q.busy, "queued": q.queued}),
            )
        })
        .collect();
    // A standby is not ready: the load balancer sends requests to the
    // leader (crate::scheduling).
    let ready = st.scheduling.schedules()
        && models
            .values()
            .all(|v| v["ready"] == true || v["loaded"] == false);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = if detail {
        json!({"ready": ready, "models": models})
    } else {
        json!({"ready": ready})
    };
    if let Some(role) = st.scheduling.role() {
        body["role"] = json!(role);
    }
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The description names exactly the routes that exist, with their methods.
    #[test]
    fn the_openapi_description_matches_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let mut described: Vec<(String, String)> = Vec::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops.as_object().unwrap().keys() {
                described.push((method.to_uppercase(), path.clone()));
            }
        }
        let mut served: Vec<(String, String)> = routes()
            .into_iter()
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .collect();
        described.sort();
        served.sort();
        assert_eq!(described, served);
        // Every reference resolves.
        let text = OPENAPI;
        for r in text.split("\"$ref\": \"#/components/schemas/").skip(1) {
            let name = r.split('"').next().unwrap();
            assert!(doc["components"]["schemas"].get(name).is_some(), "{name}");
        }
    }
}
