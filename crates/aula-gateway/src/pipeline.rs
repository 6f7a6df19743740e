//! One API call through the gateway: authenticate -> read the body (only
//! now: bounded in size and time) -> read what admission
//! needs -> limits and quotas (reserve tokens) -> the model's fair queue
//! (wait for a slot) -> ledger row -> engine -> watch the answer go by for
//! usage and time to first token -> settle (reconcile the reservation, charge
//! the fair-queue counter, free the slot, finalize the ledger row).
//!
//! A client that leaves at any point drops the request's [`InFlight`], which
//! settles it as `cancelled`. The end of a stream (`data: [DONE]`) and the
//! body of a non-streamed answer are released only after the ledger row is
//! committed, so an answer a client has is never missing from the ledger.
//!
//! What a request is charged (quotas and the ledger): the prompt and
//! completion tokens the engine reports. A request that reached an engine
//! and did not fail there, but whose prompt the engine never reported (the
//! client left before the usage arrived), is charged its prompt bound, the
//! estimate its reservation was made with, plus the completion it received:
//! leaving early does not make prompt processing free.
//!
//! `max_tokens` above the model's context (where Aula started the engine
//! and so knows it) is refused (400) before anything is reserved.

use crate::identity::Identity;
use crate::server::GatewayState;
use aula_protocol::{Admission, ApiError};
use aula_store::{Finish, RequestRecord, now_ms};
use axum::body::Body;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;
use rand::Rng;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest request body accepted (OpenAI-style JSON; 2,048 embedding
/// inputs of a few hundred characters fit).
pub const MAX_BODY_BYTES: usize = 2 << 20;
/// How long a client may take to send its request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(20);

pub async fn handle(
    st: Arc<GatewayState>,
    path: &'static str,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match run(st, path, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// Read a request body within [`BODY_TIMEOUT`] and [`MAX_BODY_BYTES`];
/// called only after the caller is authenticated, so an anonymous client
/// cannot make the gateway hold megabytes or wait on a dripping upload.
pub async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY_BYTES)).await {
        Err(_) => Err(ApiError::RequestTimeout(format!(
            "the request body did not arrive within {} s",
            BODY_TIMEOUT.as_secs()
        ))),
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            if too_large {
                Err(ApiError::PayloadTooLarge(format!(
                    "the request body is larger than {} MiB",
                    MAX_BODY_BYTES >> 20
                )))
            } else {
                Err(ApiError::invalid(format!(
                    "the request body could not be read: {e}"
                )))
            }
        }
        Ok(Ok(b)) => Ok(b),
    }
}

fn refusal_kind(e: &ApiError) -> Option<&'static str> {
    match e {
        ApiError::RateLimited { code, .. } | ApiError::Forbidden { code, .. } => Some(code),
        _ => None,
    }
}

fn request_id() -> String {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..20)
        .map(|_| A[rng.gen_range(0..A.len())] as char)
        .collect()
}

async fn run(
    st: Arc<GatewayState>,
    path: &'static str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let id = st.auth.authenticate(headers).await.inspect_err(|e| {
        if matches!(e, ApiError::Unauthorized(_)) {
            metrics::counter!("aula_auth_failures_total").increment(1);
        }
    })?;
    let body = read_body(body).await?;
    // Embeddings generate nothing: no completion budget, no max_tokens or
    // stream options added on the way; the body is validated here, whatever
    // engine serves the model.
    // One validation for every engine kind (url, vLLM, SGLang and
    // llama-server too): what Aula's own engine would refuse (`n` > 1,
    // `best_of`, token-id prompts, unknown fields...) is refused here.
    // The body is parsed once; the checks run on the parsed object.
    let embeddings = path == "/v1/embeddings";
    let (mut adm, mut obj) = aula_protocol::peek_admission(&body)?;
    match path {
        "/v1/embeddings" => drop(aula_protocol::parse_embeddings_object(&obj)?),
        "/v1/chat/completions" => drop(aula_protocol::parse_chat_object(&obj)?),
        "/v1/completions" => drop(aula_protocol::parse_completion_object(&obj)?),
        _ => {}
    }
    if embeddings {
        adm.max_tokens = Some(0);
        adm.stream = false;
    }
    // An unknown model's error lists only the models this user may use.
    let route = match st.router.get(&adm.model) {
        Ok(r) => r.clone(),
        Err(_) => {
            return Err(ApiError::ModelNotFound(format!(
                "the model `{}` does not exist; models you may use: {}",
                adm.model,
                visible_models(&st, &id).join(", ")
            )));
        }
    };
    check_max_tokens(&adm, route.context)?;
    // Aliases and renamed `url` models: the engine gets the name it knows;
    // limits, the ledger and metrics use the configured name.
    let mut rewritten = false;
    if adm.model != route.upstream_model {
        obj.insert("model".into(), json!(route.upstream_model));
        rewritten = true;
    }
    adm.model = route.name.clone();
    let resv = st
        .limiter
        .admit(
            &id,
            &adm.model,
            adm.prompt_tokens_bound,
            adm.max_tokens,
            now_ms(),
        )
        .inspect_err(|e| {
            if let Some(kind) = refusal_kind(e) {
                metrics::counter!("aula_limit_refusals_total", "kind" => kind).increment(1);
            }
        })?;

    // What the engine is sent: the ceiling when the request set no
    // max_tokens, and the usage chunk of a stream (removed again on the way
    // back when the client did not ask for it).
    if !embeddings
        && adm.max_tokens.is_none()
        && let Some(m) = resv.max_tokens
    {
        obj.insert("max_tokens".into(), json!(m));
        rewritten = true;
    }
    if !embeddings && adm.stream && !adm.include_usage {
        obj.insert("stream_options".into(), json!({"include_usage": true}));
        rewritten = true;
    }
    let body = if rewritten {
        Bytes::from(
            serde_json::to_vec(&Value::Object(obj))
                .map_err(|e| ApiError::Internal(e.to_string()))?,
        )
    } else {
        body
    };

    let weight = resv.weight;
    let mut fl = InFlight {
        st: st.clone(),
        queue: route.queue.clone(),
        model: adm.model.clone(),
        resv: Some(resv),
        permit: None,
        record: None,
        arrived,
        queue_ms: 0.0,
        ttft: None,
        prompt_bound: adm.prompt_tokens_bound,
        reached_engine: false,
        prompt_tokens: None,
        completion_tokens: None,
        chunks: 0,
        done: false,
        in_use: st.fleet.enter(&adm.model),
    };
    // A model that is not loaded starts now; this request waits for it.
    if let Err(e) = st.fleet.ensure_loaded(&adm.model).await {
        return Err(fl.fail(e).await);
    }
    let ticket = match route
        .queue
        .enqueue(&id.name, weight, adm.prompt_tokens_bound)
    {
        Ok(t) => t,
        Err(full) => {
            let e = ApiError::RateLimited {
                message: match full {
                    crate::fair::QueueFull::User => format!(
                        "you have too many requests waiting for `{}`; wait for some to finish",
                        adm.model
                    ),
                    crate::fair::QueueFull::Total => {
                        format!("the queue for `{}` is full; try again shortly", adm.model)
                    }
                },
                code: "queue_full",
                retry_after_s: 1,
            };
            metrics::counter!("aula_limit_refusals_total", "kind" => "queue_full").increment(1);
            return Err(fl.fail(e).await);
        }
    };
    gauges(&fl.model, &fl.queue);
    let Some(permit) = ticket.ready().await else {
        return Err(fl
            .fail(ApiError::Internal("the queue was closed".into()))
            .await);
    };
    fl.permit = Some(permit);
    // An engine restarting after a crash: queued requests wait for it.
    if let Err(e) = st.fleet.ensure_loaded(&adm.model).await {
        return Err(fl.fail(e).await);
    }
    fl.queue_ms = arrived.elapsed().as_secs_f64() * 1000.0;
    gauges(&fl.model, &fl.queue);
    metrics::histogram!("aula_queue_wait_seconds", "model" => fl.model.clone())
        .record(fl.queue_ms / 1000.0);

    let record = RequestRecord {
        id: request_id(),
        user: id.name.clone(),
        groups: id.groups.clone(),
        model: adm.model.clone(),
        admitted_ms: now_ms(),
    };
    if let Err(e) = st.ledger.begin(record.clone()).await {
        return Err(fl
            .fail(ApiError::Unavailable(format!(
                "{e}; the request was not run"
            )))
            .await);
    }
    fl.record = Some(record);

    // From here the engine may be working on the prompt, also if the
    // client leaves before the answer starts.
    fl.reached_engine = true;
    let resp = match route.backend.forward(path, body).await {
        Ok(r) => r,
        // The engine had the request all that time: charged like a client
        // that left (its prompt bound), not free.
        Err(e @ ApiError::EngineTimeout(_)) => {
            fl.complete("timeout").await;
            return Err(e);
        }
        Err(e) => {
            fl.reached_engine = false;
            return Err(fl.fail(e).await);
        }
    };
    let (mut parts, upstream) = resp.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::TRANSFER_ENCODING);
    if let Some(rec) = fl.record.as_ref()
        && let Ok(v) = header::HeaderValue::from_str(&rec.id)
    {
        // The ledger row of this request, for support questions.
        parts.headers.insert("x-aula-request-id", v);
    }
    if !(adm.stream && parts.status.is_success()) {
        let bytes = match upstream.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return Err(fl
                    .fail(ApiError::BadGateway(format!(
                        "the engine for model `{}` failed while answering: {e}",
                        adm.model
                    )))
                    .await);
            }
        };
        let status = if parts.status.is_success() {
            if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                fl.prompt_tokens = v["usage"]["prompt_tokens"].as_u64();
                fl.completion_tokens = v["usage"]["completion_tokens"].as_u64();
            }
            fl.ttft = Some(arrived.elapsed());
            "ok".to_string()
        } else {
            format!("error:{}", parts.status.as_u16())
        };
        fl.complete(&status).await;
        return Ok(Response::from_parts(parts, Body::from(bytes)));
    }

    let tracker = SseTracker {
        fl,
        strip_usage: !adm.include_usage,
        buf: Vec::new(),
        saw_done: false,
        dropped: false,
    };
    let stream = futures::stream::unfold(
        Some((upstream.into_data_stream(), tracker)),
        |state| async move {
            let (mut up, mut t) = state?;
            loop {
                match up.next().await {
                    Some(Ok(chunk)) => {
                        let out = t.observe(&chunk);
                        if !out.is_empty() {
                            return Some((Ok::<Bytes, std::io::Error>(out), Some((up, t))));
                        }
                    }
                    Some(Err(e)) => {
                        // The engine failed mid-answer (it crashed, say): end
                        // the stream with an error event the client can read.
                        let mut out = t.flush();
                        t.fl.complete("error:502").await;
                        out.extend_from_slice(&error_event(&t.fl.model, &e.to_string()));
                        return Some((Ok(Bytes::from(out)), None));
                    }
                    None => {
                        let mut out = t.flush();
                        let status = if t.saw_done { "ok" } else { "error:502" };
                        t.fl.complete(status).await;
                        if t.saw_done {
                            out.extend_from_slice(b"data: [DONE]\n\n");
                        } else {
                            out.extend_from_slice(&error_event(
                                &t.fl.model,
                                "the answer ended early",
                            ));
                        }
                        return if out.is_empty() {
                            None
                        } else {
                            Some((Ok(Bytes::from(out)), None))
                        };
                    }
                }
            }
        },
    );
    Ok(Response::from_parts(parts, Body::from_stream(stream)))
}

/// An OpenAI-style error event for a stream that cannot finish.
fn error_event(model: &str, why: &str) -> Vec<u8> {
    let e = ApiError::BadGateway(format!(
        "the engine for model `{model}` failed during the answer ({why}); the text above is incomplete"
    ));
    format!("data: {}\n\n", e.body()).into_bytes()
}

/// Refuse a `max_tokens` larger than the model's context (when known):
/// no engine could produce it, and it would reserve a budget for nothing.
fn check_max_tokens(adm: &Admission, context: Option<u32>) -> Result<(), ApiError> {
    match (adm.max_tokens, context) {
        (Some(m), Some(c)) if m > u64::from(c) => Err(ApiError::invalid_param(
            adm.max_tokens_field,
            format!(
                "`{}` is {m}, more than the context of the model `{}`: {c} tokens per request",
                adm.max_tokens_field, adm.model
            ),
        )),
        _ => Ok(()),
    }
}

/// A token count for the limiter and the ledger (saturating, never negative).
fn as_tokens(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn gauges(model: &str, queue: &crate::fair::FairQueue) {
    let s = queue.stats();
    metrics::gauge!("aula_queue_depth", "model" => model.to_string()).set(s.queued as f64);
    metrics::gauge!("aula_slots_busy", "model" => model.to_string()).set(s.busy as f64);
}

/// Everything a request holds until it is settled.
struct InFlight {
    st: Arc<GatewayState>,
    queue: Arc<crate::fair::FairQueue>,
    model: String,
    resv: Option<crate::limits::Reservation>,
    permit: Option<crate::fair::Permit>,
    record: Option<RequestRecord>,
    arrived: Instant,
    queue_ms: f64,
    ttft: Option<Duration>,
    /// The estimate of the prompt's tokens the reservation was made with.
    prompt_bound: u64,
    /// The request was sent to the engine (and the engine did not refuse
    /// the connection).
    reached_engine: bool,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    /// Content chunks seen (a stand-in for completion tokens without usage).
    chunks: u64,
    done: bool,
    /// The model is in use until this request ends (no eviction meanwhile).
    in_use: Option<aula_fleet::lifecycle::InUse>,
}

impl InFlight {
    /// Settle as failed with `e`'s status; returns `e` for the client.
    async fn fail(&mut self, e: ApiError) -> ApiError {
        self.complete(&format!("error:{}", e.status().as_u16()))
            .await;
        e
    }

    async fn complete(&mut self, status: &str) {
        if let Some(f) = self.settle(status)
            && let Err(e) = self.st.ledger.finish(f).await
        {
            tracing::error!("the ledger could not finalize a request: {e}");
        }
    }

    fn settle(&mut self, status: &str) -> Option<Finish> {
        if self.done {
            return None;
        }
        self.done = true;
        let completion = self
            .completion_tokens
            .or((self.chunks > 0).then_some(self.chunks));
        // The prompt as charged: reported by the engine, else its bound once
        // the engine had it (unless the engine failed).
        let charged_prompt =
            self.prompt_tokens
                .or((self.reached_engine && !status.starts_with("error:"))
                    .then_some(self.prompt_bound));
        let used = charged_prompt
            .unwrap_or(0)
            .saturating_add(completion.unwrap_or(0));
        if let Some(mut p) = self.permit.take() {
            p.charge(self.prompt_tokens, completion.unwrap_or(0));
            drop(p);
            gauges(&self.model, &self.queue);
        }
        if let Some(r) = self.resv.take() {
            self.st.limiter.finish(&r, as_tokens(used));
        }
        let label =
            status
                .strip_prefix("error:")
                .unwrap_or(if status == "ok" { "200" } else { status });
        let model = self.model.clone();
        metrics::counter!("aula_requests_total", "model" => model.clone(), "status" => label.to_string())
            .increment(1);
        if let Some(p) = self.prompt_tokens {
            metrics::counter!("aula_tokens_total", "model" => model.clone(), "kind" => "prompt")
                .increment(p);
        }
        if let Some(c) = completion {
            metrics::counter!("aula_tokens_total", "model" => model.clone(), "kind" => "completion").increment(c);
        }
        if let Some(t) = self.ttft {
            metrics::histogram!("aula_time_to_first_token_seconds", "model" => model.clone())
                .record(t.as_secs_f64());
        }
        let duration = self.arrived.elapsed();
        metrics::histogram!("aula_request_duration_seconds", "model" => model)
            .record(duration.as_secs_f64());
        self.in_use = None;
        let record = self.record.take()?;
        Some(Finish {
            record,
            status: status.to_string(),
            prompt_tokens: charged_prompt.map(as_tokens),
            completion_tokens: completion.map(as_tokens),
            queue_ms: self.queue_ms,
            ttft_ms: self.ttft.map(|t| t.as_secs_f64() * 1000.0),
            duration_ms: duration.as_secs_f64() * 1000.0,
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(f) = self.settle("cancelled") {
            self.st.ledger.finish_detached(f);
        }
    }
}

/// Watches a stream of server-sent events on its way to the client.
struct SseTracker {
    fl: InFlight,
    strip_usage: bool,
    buf: Vec<u8>,
    saw_done: bool,
    /// The event just dropped: its blank separator line goes too.
    dropped: bool,
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Does this chunk carry generated text (`"content":"x` or `"text":"x`)?
fn has_text(data: &[u8]) -> bool {
    for key in [&b"\"content\":\""[..], &b"\"text\":\""[..]] {
        let mut rest = data;
        while let Some(i) = rest.windows(key.len()).position(|w| w == key) {
            let after = &rest[i + key.len()..];
            if after.first().is_some_and(|c| *c != b'"') {
                return true;
            }
            rest = after;
        }
    }
    false
}

impl SseTracker {
    fn observe(&mut self, chunk: &[u8]) -> Bytes {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(chunk.len());
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            self.line(&line, &mut out);
        }
        Bytes::from(out)
    }

    fn flush(&mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.buf);
        let mut out = Vec::new();
        if !rest.is_empty() {
            self.line(&rest, &mut out);
        }
        out
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        let text = line.trim_ascii_end();
        if std::mem::take(&mut self.dropped) && text.is_empty() {
            return;
        }
        if let Some(data) = text.strip_prefix(b"data:") {
            let data = data.trim_ascii_start();
            if data == b"[DONE]" {
                // Held back until the ledger has the record.
                self.saw_done = true;
                self.dropped = true;
                return;
            }
            if has_text(data) {
                self.fl.chunks += 1;
                if self.fl.ttft.is_none() {
                    self.fl.ttft = Some(self.fl.arrived.elapsed());
                }
            }
            if contains(data, b"\"usage\"")
                && let Ok(v) = serde_json::from_slice::<Value>(data)
                && v["usage"].is_object()
            {
                self.fl.prompt_tokens = v["usage"]["prompt_tokens"].as_u64();
                self.fl.completion_tokens = v["usage"]["completion_tokens"].as_u64();
                if self.strip_usage && v["choices"].as_array().is_some_and(Vec::is_empty) {
                    self.dropped = true;
                    return;
                }
            }
        }
        out.extend_from_slice(line);
    }
}

/// `Identity` as the `/v1/models` list sees it: only the models allowed.
pub fn visible_models(st: &GatewayState, id: &Identity) -> Vec<String> {
    let allowed = crate::limits::effective(&st.limiter.rules(), id).models;
    st.router
        .all_names()
        .into_iter()
        .filter(|n| {
            let canonical = st.router.get(n).map(|r| r.name.clone()).unwrap_or_default();
            allowed.as_ref().is_none_or(|a| a.contains(&canonical))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{LimitFields, LimitRule, Limiter, PriorUsage, Scope};

    #[test]
    fn text_detection() {
        assert!(super::has_text(
            br#"{"choices":[{"delta":{"content":"Hi"}}]}"#
        ));
        assert!(!super::has_text(
            br#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#
        ));
        assert!(super::has_text(br#"{"choices":[{"text":" x","index":0}]}"#));
        assert!(!super::has_text(
            br#"{"choices":[],"usage":{"prompt_tokens":3}}"#
        ));
    }

    #[test]
    fn max_tokens_above_the_context_are_refused() {
        let (adm, _) = aula_protocol::peek_admission(
            br#"{"model":"m","prompt":"x","max_completion_tokens":5000}"#,
        )
        .unwrap();
        let e = check_max_tokens(&adm, Some(4096)).unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(e.body()["error"]["param"], "max_completion_tokens");
        assert!(check_max_tokens(&adm, Some(5000)).is_ok());
        assert!(check_max_tokens(&adm, None).is_ok());
    }

    /// A gateway with no models, a database in a temporary directory and
    /// a daily token budget of 10,000.
    async fn gateway() -> (Arc<GatewayState>, std::path::PathBuf) {
        static DIRS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "aula-pipeline-test-{}-{}",
            std::process::id(),
            DIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let store = aula_store::Store::open_in(&dir).await.unwrap();
        let auth = crate::auth::Authenticator::new(
            store.clone(),
            crate::auth::AuthSettings {
                allow_open: true,
                ..Default::default()
            },
            aula_fleet::backend::http_client(),
        )
        .await
        .unwrap();
        let fleet = aula_fleet::FleetBuilder::new(aula_fleet::Settings {
            exe: std::path::PathBuf::new(),
            logs: dir.clone(),
            budget_bytes: 0,
            load_timeout: Duration::from_secs(1),
        })
        .start(&aula_fleet::tasks::Tasks::new())
        .unwrap();
        let st = GatewayState {
            router: crate::router::ModelRouter::default(),
            auth,
            limiter: Limiter::new(
                vec![LimitRule {
                    scope: Scope::Everyone,
                    fields: LimitFields {
                        tokens_per_day: Some(10_000),
                        ..Default::default()
                    },
                }],
                None,
                PriorUsage::default(),
            ),
            ledger: aula_store::Ledger::start(store),
            reload: None,
            fleet,
        };
        (Arc::new(st), dir)
    }

    /// A request of `user` admitted with a prompt bound of 500 and
    /// `max_tokens` 100, which has seen `chunks` chunks of text.
    fn in_flight(st: &Arc<GatewayState>, user: &str, reached: bool, chunks: u64) -> InFlight {
        let id = Identity {
            name: user.into(),
            role: aula_store::Role::Student,
            groups: Vec::new(),
            via: crate::identity::Via::Key,
        };
        let resv = st
            .limiter
            .admit(&id, "m", 500, Some(100), now_ms())
            .unwrap();
        InFlight {
            st: st.clone(),
            queue: crate::fair::FairQueue::new(1, crate::fair::FairConfig::default()),
            model: "m".into(),
            resv: Some(resv),
            permit: None,
            record: None,
            arrived: Instant::now(),
            queue_ms: 0.0,
            ttft: None,
            prompt_bound: 500,
            reached_engine: reached,
            prompt_tokens: None,
            completion_tokens: None,
            chunks,
            done: false,
            in_use: None,
        }
    }

    /// A client that leaves after two chunks is charged its prompt bound
    /// and the two chunks, not the two chunks alone.
    #[tokio::test]
    async fn a_client_that_leaves_is_charged_its_prompt() {
        let (st, dir) = gateway().await;
        let used_today = |user: &str| st.limiter.usage_of(user).unwrap()[0];

        drop(in_flight(&st, "gone", true, 2));
        assert_eq!(used_today("gone"), (502, 0));

        // The engine reported the prompt before the client left: that counts.
        let mut fl = in_flight(&st, "reported", true, 2);
        fl.prompt_tokens = Some(40);
        drop(fl);
        assert_eq!(used_today("reported"), (42, 0));

        // Left while waiting in the queue: the engine never saw it.
        drop(in_flight(&st, "queued", false, 0));
        assert_eq!(used_today("queued"), (0, 0));

        // The engine failed: the user is not charged for the prompt.
        let mut fl = in_flight(&st, "failed", true, 3);
        let finish = fl.settle("error:502");
        assert!(finish.is_none());
        drop(fl);
        assert_eq!(used_today("failed"), (3, 0));
        let _ = std::fs::remove_dir_all(dir);
    }
}
