//! The seam between the API and the engines. Every engine Aula talks to —
//! its own `aula engine` children, vLLM, llama-server, SGLang, another Aula —
//! speaks the OpenAI HTTP API, so one HTTP implementation serves them all;
//! the trait is where other kinds of backends plug in.

use aula_protocol::ApiError;
use axum::body::Body;
use axum::http::{Request, Response, header};
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::RwLock;

pub trait Backend: Send + Sync {
    /// Send an API request (`path` like `/v1/chat/completions`) and return the
    /// engine's response with its body still streaming.
    fn forward(
        &self,
        path: &'static str,
        body: Bytes,
    ) -> BoxFuture<'_, Result<Response<Body>, ApiError>>;
    /// Where the engine is now, if it is up.
    fn address(&self) -> Option<String>;
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .build(connector)
}

/// Where an engine stands, as far as requests are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// Being started (or restarted); no address yet.
    Starting,
    /// Serving at this base URL.
    Ready(String),
    /// The last start failed, for this reason; a new attempt follows.
    Failed(String),
    /// Not running (not loaded yet, unloaded, or evicted).
    Stopped,
}

/// An engine reached over HTTP.
pub struct HttpBackend {
    pub model: String,
    upstream: RwLock<Upstream>,
    client: HttpClient,
    /// How long the last successful start took.
    load_time: RwLock<Option<std::time::Duration>>,
    /// The engine process, for engines Aula started (0: none).
    pid: std::sync::atomic::AtomicU32,
}

impl HttpBackend {
    pub fn new(model: &str, upstream: Upstream, client: HttpClient) -> Self {
        HttpBackend {
            model: model.to_string(),
            upstream: RwLock::new(upstream),
            client,
            load_time: RwLock::new(None),
            pid: std::sync::atomic::AtomicU32::new(0),
        }
    }

    pub fn set_pid(&self, pid: Option<u32>) {
        self.pid
            .store(pid.unwrap_or(0), std::sync::atomic::Ordering::SeqCst);
    }

    pub fn pid(&self) -> Option<u32> {
        Some(self.pid.load(std::sync::atomic::Ordering::SeqCst)).filter(|p| *p != 0)
    }

    pub fn set_load_time(&self, d: std::time::Duration) {
        if let Ok(mut t) = self.load_time.write() {
            *t = Some(d);
        }
    }

    pub fn load_time(&self) -> Option<std::time::Duration> {
        self.load_time.read().ok().and_then(|t| *t)
    }

    pub fn state(&self) -> Upstream {
        self.upstream()
    }

    pub fn client(&self) -> &HttpClient {
        &self.client
    }

    pub fn set(&self, upstream: Upstream) {
        if let Ok(mut u) = self.upstream.write() {
            *u = upstream;
        }
    }

    fn upstream(&self) -> Upstream {
        self.upstream
            .read()
            .map(|u| u.clone())
            .unwrap_or(Upstream::Starting)
    }
}

impl Backend for HttpBackend {
    fn address(&self) -> Option<String> {
        match self.upstream() {
            Upstream::Ready(base) => Some(base),
            _ => None,
        }
    }

    fn forward(
        &self,
        path: &'static str,
        body: Bytes,
    ) -> BoxFuture<'_, Result<Response<Body>, ApiError>> {
        Box::pin(async move {
            let base = match self.upstream() {
                Upstream::Ready(base) => base,
                Upstream::Starting => {
                    return Err(ApiError::Unavailable(format!(
                        "the engine for model `{}` is starting or restarting; try again in a moment",
                        self.model
                    )));
                }
                Upstream::Failed(why) => {
                    return Err(ApiError::Unavailable(format!(
                        "the engine for model `{}` could not start: {why}; Aula keeps retrying",
                        self.model
                    )));
                }
                Upstream::Stopped => {
                    return Err(ApiError::Unavailable(format!(
                        "the model `{}` is not loaded; try again in a moment",
                        self.model
                    )));
                }
            };
            let req = Request::post(format!("{base}{path}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(body))
                .map_err(|e| ApiError::Internal(format!("building the engine request: {e}")))?;
            let resp = self.client.request(req).await.map_err(|e| {
                if e.is_connect() {
                    ApiError::Unavailable(format!(
                        "the engine for model `{}` is not reachable; try again in a moment",
                        self.model
                    ))
                } else {
                    ApiError::BadGateway(format!(
                        "the engine for model `{}` failed: {e}",
                        self.model
                    ))
                }
            })?;
            Ok(resp.map(Body::new))
        })
    }
}

/// Several replicas of one model's server: each request goes to the healthy
/// replica with the fewest requests outstanding; a health check marks them
/// up and down.
pub struct Replicas {
    pub model: String,
    members: Vec<Replica>,
}

struct Replica {
    base: String,
    backend: HttpBackend,
    outstanding: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    healthy: std::sync::atomic::AtomicBool,
}

struct Outstanding(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Replicas {
    pub fn new(model: &str, bases: &[String], client: HttpClient) -> Replicas {
        Replicas {
            model: model.to_string(),
            members: bases
                .iter()
                .map(|b| Replica {
                    base: b.clone(),
                    backend: HttpBackend::new(model, Upstream::Ready(b.clone()), client.clone()),
                    outstanding: Default::default(),
                    healthy: std::sync::atomic::AtomicBool::new(true),
                })
                .collect(),
        }
    }

    /// (base URL, healthy, outstanding) of each replica.
    pub fn status(&self) -> Vec<(String, bool, usize)> {
        use std::sync::atomic::Ordering;
        self.members
            .iter()
            .map(|m| {
                (
                    m.base.clone(),
                    m.healthy.load(Ordering::SeqCst),
                    m.outstanding.load(Ordering::SeqCst),
                )
            })
            .collect()
    }

    /// Check every replica's `/health` (or `/v1/models`) every `every`.
    pub async fn health_loop(self: std::sync::Arc<Self>, every: std::time::Duration) {
        use std::sync::atomic::Ordering;
        loop {
            for m in &self.members {
                let mut ok = false;
                for path in ["/health", "/v1/models"] {
                    let Ok(req) =
                        Request::get(format!("{}{path}", m.base)).body(Full::new(Bytes::new()))
                    else {
                        continue;
                    };
                    if let Ok(Ok(resp)) = tokio::time::timeout(
                        std::time::Duration::from_secs(3),
                        m.backend.client.request(req),
                    )
                    .await
                        && resp.status().is_success()
                    {
                        ok = true;
                        break;
                    }
                }
                let was = m.healthy.swap(ok, Ordering::SeqCst);
                if was != ok {
                    if ok {
                        tracing::info!(model = %self.model, "replica {} is healthy again", m.base);
                    } else {
                        tracing::warn!(model = %self.model, "replica {} fails its health check", m.base);
                    }
                }
            }
            tokio::time::sleep(every).await;
        }
    }
}

impl Backend for Replicas {
    fn address(&self) -> Option<String> {
        use std::sync::atomic::Ordering;
        self.members
            .iter()
            .find(|m| m.healthy.load(Ordering::SeqCst))
            .map(|m| m.base.clone())
    }

    fn forward(
        &self,
        path: &'static str,
        body: Bytes,
    ) -> BoxFuture<'_, Result<Response<Body>, ApiError>> {
        use std::sync::atomic::Ordering;
        Box::pin(async move {
            let healthy: Vec<&Replica> = self
                .members
                .iter()
                .filter(|m| m.healthy.load(Ordering::SeqCst))
                .collect();
            // With none healthy, try them all: the check may be stale.
            let pool = if healthy.is_empty() {
                self.members.iter().collect()
            } else {
                healthy
            };
            let Some(r) = pool
                .into_iter()
                .min_by_key(|m| m.outstanding.load(Ordering::SeqCst))
            else {
                return Err(ApiError::Unavailable(format!(
                    "the model `{}` has no server",
                    self.model
                )));
            };
            r.outstanding.fetch_add(1, Ordering::SeqCst);
            let guard = Outstanding(r.outstanding.clone());
            let resp = r.backend.forward(path, body).await.inspect_err(|e| {
                if matches!(e, ApiError::Unavailable(_)) {
                    r.healthy.store(false, Ordering::SeqCst);
                }
            })?;
            let (parts, body) = resp.into_parts();
            use futures::StreamExt;
            let stream = http_body_util::BodyExt::into_data_stream(body).map(move |chunk| {
                let _held = &guard;
                chunk
            });
            Ok(Response::from_parts(parts, Body::from_stream(stream)))
        })
    }
}

/// Several engines Aula started for one model (`replicas`): each request
/// goes to a ready one with the fewest requests outstanding.
pub struct EnginePool {
    pub model: String,
    members: Vec<(
        std::sync::Arc<HttpBackend>,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    )>,
}

impl EnginePool {
    pub fn new(model: &str, members: Vec<std::sync::Arc<HttpBackend>>) -> EnginePool {
        EnginePool {
            model: model.to_string(),
            members: members
                .into_iter()
                .map(|b| (b, Default::default()))
                .collect(),
        }
    }
}

impl Backend for EnginePool {
    fn address(&self) -> Option<String> {
        self.members.iter().find_map(|(b, _)| b.address())
    }

    fn forward(
        &self,
        path: &'static str,
        body: Bytes,
    ) -> BoxFuture<'_, Result<Response<Body>, ApiError>> {
        use std::sync::atomic::Ordering;
        Box::pin(async move {
            let ready = self
                .members
                .iter()
                .filter(|(b, _)| b.address().is_some())
                .min_by_key(|(_, n)| n.load(Ordering::SeqCst));
            let Some((b, n)) = ready.or(self.members.first()) else {
                return Err(ApiError::Unavailable(format!(
                    "the model `{}` has no engine",
                    self.model
                )));
            };
            n.fetch_add(1, Ordering::SeqCst);
            let guard = Outstanding(n.clone());
            let resp = b.forward(path, body).await?;
            let (parts, body) = resp.into_parts();
            use futures::StreamExt;
            let stream = http_body_util::BodyExt::into_data_stream(body).map(move |chunk| {
                let _held = &guard;
                chunk
            });
            Ok(Response::from_parts(parts, Body::from_stream(stream)))
        })
    }
}
