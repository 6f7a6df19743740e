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

/// How long an engine may take to start answering (its response headers; a
/// non-streamed answer's whole generation): a wedged engine must not hold a
/// slot forever.
pub const ENGINE_ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);
/// The longest silence allowed between two chunks of a streamed answer.
pub const ENGINE_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    // A server whose packets vanish (a cut network) fails within this
    // instead of the system's minutes of SYN retries.
    connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .build(connector)
}

/// The one health probe: GET `url` (with the engine's key, if any) within
/// `timeout`; the body of a successful answer, else None.
pub async fn probe(
    client: &HttpClient,
    url: &str,
    key: Option<&str>,
    timeout: std::time::Duration,
) -> Option<Bytes> {
    let mut req = Request::get(url);
    if let Some(k) = key {
        req = req.header(header::AUTHORIZATION, format!("Bearer {k}"));
    }
    let req = req.body(Full::new(Bytes::new())).ok()?;
    let resp = tokio::time::timeout(timeout, client.request(req))
        .await
        .ok()?
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let body = tokio::time::timeout(
        timeout,
        http_body_util::BodyExt::collect(http_body_util::Limited::new(resp.into_body(), 1 << 20)),
    )
    .await
    .ok()?
    .ok()?;
    Some(body.to_bytes())
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
    /// The key the engine requires (`Authorization: Bearer`), for engines
    /// Aula started: a fresh random one for each start.
    secret: RwLock<Option<String>>,
    /// Told of every change of state (the fleet's change signal).
    changes: Option<std::sync::Arc<tokio::sync::watch::Sender<()>>>,
}

impl HttpBackend {
    pub fn new(model: &str, upstream: Upstream, client: HttpClient) -> Self {
        HttpBackend {
            model: model.to_string(),
            upstream: RwLock::new(upstream),
            client,
            load_time: RwLock::new(None),
            pid: std::sync::atomic::AtomicU32::new(0),
            secret: RwLock::new(None),
            changes: None,
        }
    }

    /// Signal `changes` whenever this engine's state changes.
    pub fn notifying(mut self, changes: std::sync::Arc<tokio::sync::watch::Sender<()>>) -> Self {
        self.changes = Some(changes);
        self
    }

    pub fn set_secret(&self, secret: Option<String>) {
        if let Ok(mut s) = self.secret.write() {
            *s = secret;
        }
    }

    /// The key the engine requires, when it has one.
    pub fn secret(&self) -> Option<String> {
        self.secret.read().ok().and_then(|s| s.clone())
    }

    /// A request to the engine, carrying its key when it has one.
    pub fn request(
        &self,
        method: axum::http::Method,
        url: String,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, axum::http::Error> {
        let mut b = Request::builder().method(method).uri(url);
        if let Ok(s) = self.secret.read()
            && let Some(key) = s.as_deref()
        {
            b = b.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        b.body(Full::new(body))
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
        if let Some(c) = &self.changes {
            c.send_replace(());
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
            let mut req = self
                .request(axum::http::Method::POST, format!("{base}{path}"), body)
                .map_err(|e| ApiError::Internal(format!("building the engine request: {e}")))?;
            req.headers_mut().insert(
                header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            );
            let resp = tokio::time::timeout(ENGINE_ANSWER_TIMEOUT, self.client.request(req))
                .await
                .map_err(|_| {
                    ApiError::EngineTimeout(format!(
                        "the engine for model `{}` did not answer within {} s",
                        self.model,
                        ENGINE_ANSWER_TIMEOUT.as_secs()
                    ))
                })?
                .map_err(|e| {
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
            let (parts, body) = resp.into_parts();
            let body = idle_limited(
                http_body_util::BodyExt::into_data_stream(body),
                ENGINE_IDLE_TIMEOUT,
                (),
            );
            Ok(Response::from_parts(parts, Body::from_stream(body)))
        })
    }
}

/// Several servers for one model — replicas Aula started, or the `url`s of
/// servers run elsewhere: each request goes to an up member (its engine
/// ready and, for `url` members, its health check passing) with the fewest
/// requests outstanding.
pub struct Pool {
    pub model: String,
    members: Vec<Member>,
    /// Members are health-checked (`url` servers): a failed request marks
    /// one down until its next check passes.
    checked: bool,
}

struct Member {
    backend: std::sync::Arc<HttpBackend>,
    outstanding: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    healthy: std::sync::atomic::AtomicBool,
}

impl Member {
    fn up(&self) -> bool {
        self.healthy.load(std::sync::atomic::Ordering::SeqCst) && self.backend.address().is_some()
    }
}

struct Outstanding(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Pool {
    /// Engines Aula started: up when their supervisor says they are ready.
    pub fn new(model: &str, members: Vec<std::sync::Arc<HttpBackend>>) -> Pool {
        Pool {
            model: model.to_string(),
            checked: false,
            members: members
                .into_iter()
                .map(|backend| Member {
                    backend,
                    outstanding: Default::default(),
                    healthy: std::sync::atomic::AtomicBool::new(true),
                })
                .collect(),
        }
    }

    /// Servers run elsewhere, one per base URL.
    pub fn of_urls(model: &str, bases: &[String], client: HttpClient) -> Pool {
        let members = bases
            .iter()
            .map(|b| {
                std::sync::Arc::new(HttpBackend::new(
                    model,
                    Upstream::Ready(b.clone()),
                    client.clone(),
                ))
            })
            .collect();
        Pool {
            checked: true,
            ..Pool::new(model, members)
        }
    }

    /// The key every member's server requires (`url` servers started with one).
    pub fn set_secret(&self, key: Option<String>) {
        for m in &self.members {
            m.backend.set_secret(key.clone());
        }
    }

    /// Check every member's `/health` (or `/v1/models`) every `every`.
    pub async fn health_loop(self: std::sync::Arc<Self>, every: std::time::Duration) {
        use std::sync::atomic::Ordering;
        loop {
            for m in &self.members {
                let Some(base) = m.backend.address() else {
                    continue;
                };
                let key = m.backend.secret();
                let mut ok = false;
                for path in ["/health", "/v1/models"] {
                    let url = format!("{base}{path}");
                    let timeout = std::time::Duration::from_secs(3);
                    if probe(&m.backend.client, &url, key.as_deref(), timeout)
                        .await
                        .is_some()
                    {
                        ok = true;
                        break;
                    }
                }
                let was = m.healthy.swap(ok, Ordering::SeqCst);
                if was != ok {
                    if ok {
                        tracing::info!(model = %self.model, "server {base} is healthy again");
                    } else {
                        tracing::warn!(model = %self.model, "server {base} fails its health check");
                    }
                }
            }
            tokio::time::sleep(every).await;
        }
    }
}

impl Backend for Pool {
    fn address(&self) -> Option<String> {
        self.members
            .iter()
            .find(|m| m.up())
            .and_then(|m| m.backend.address())
    }

    fn forward(
        &self,
        path: &'static str,
        body: Bytes,
    ) -> BoxFuture<'_, Result<Response<Body>, ApiError>> {
        use std::sync::atomic::Ordering;
        Box::pin(async move {
            // The members up first, fewest outstanding first; then those a
            // health check marked down (it may be stale, and a starting
            // engine answers with its own clear 503). A member that cannot
            // be reached (nothing was sent: safe to send again) is marked
            // down and the next one tried, so a box that died is routed
            // around at once, even while a busy machine's health check has
            // the live one marked down.
            let mut pool: Vec<&Member> = self.members.iter().collect();
            pool.sort_by_key(|m| (!m.up(), m.outstanding.load(Ordering::SeqCst)));
            let mut last = None;
            let mut answered = None;
            for m in pool {
                m.outstanding.fetch_add(1, Ordering::SeqCst);
                let guard = Outstanding(m.outstanding.clone());
                match m.backend.forward(path, body.clone()).await {
                    Err(e @ ApiError::Unavailable(_)) => {
                        if self.checked && m.healthy.swap(false, Ordering::SeqCst) {
                            tracing::warn!(model = %self.model, "a server of the pool cannot be reached; trying another");
                        }
                        last = Some(e);
                    }
                    other => {
                        answered = Some((other, guard));
                        break;
                    }
                }
            }
            let (resp, guard) = match answered {
                Some((r, g)) => (r?, g),
                None => {
                    return Err(last.unwrap_or_else(|| {
                        ApiError::Unavailable(format!("the model `{}` has no server", self.model))
                    }));
                }
            };
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

/// An engine's answer body that ends with an error when the engine goes
/// quiet for longer than `idle` (a stream the gateway would otherwise wait
/// on forever), holding `guard` until the body is done.
fn idle_limited<S, E, G>(
    body: S,
    idle: std::time::Duration,
    guard: G,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send
where
    S: futures::Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
    G: Send + 'static,
{
    futures::stream::unfold(Some((body, guard)), move |state| async move {
        let (mut body, guard) = state?;
        use futures::StreamExt;
        match tokio::time::timeout(idle, body.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some((body, guard)))),
            Ok(Some(Err(e))) => Some((Err(std::io::Error::other(e)), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the engine sent nothing for {} s", idle.as_secs()),
                )),
                None,
            )),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change of an engine's state wakes whoever watches the fleet (a
    /// load waiting for it, `Fleet::subscribe`).
    #[tokio::test]
    async fn a_state_change_wakes_watchers() {
        let changes = std::sync::Arc::new(tokio::sync::watch::channel(()).0);
        let mut rx = changes.subscribe();
        let b = HttpBackend::new("m", Upstream::Stopped, http_client()).notifying(changes);
        assert!(!rx.has_changed().unwrap());
        b.set(Upstream::Ready("http://127.0.0.1:1".into()));
        tokio::time::timeout(std::time::Duration::from_secs(1), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.address().as_deref(), Some("http://127.0.0.1:1"));
    }
}
