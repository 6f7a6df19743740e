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
}

impl HttpBackend {
    pub fn new(model: &str, upstream: Upstream, client: HttpClient) -> Self {
        HttpBackend {
            model: model.to_string(),
            upstream: RwLock::new(upstream),
            client,
            load_time: RwLock::new(None),
        }
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
