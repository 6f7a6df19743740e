//! One API call through the gateway: authenticate -> read what admission
//! needs -> limits and quotas (reserve tokens) -> the model's fair queue
//! (wait for a slot) -> ledger row -> engine -> watch the answer go by for
//! usage and time to first token -> settle (reconcile the reservation, charge
//! the fair-queue counter, free the slot, finalize the ledger row).
//!
//! A client that leaves at any point drops the request's [`InFlight`], which
//! settles it as `cancelled`. The end of a stream (`data: [DONE]`) and the
//! body of a non-streamed answer are released only after the ledger row is
//! committed, so an answer a client has is never missing from the ledger.

use crate::identity::Identity;
use crate::server::GatewayState;
use aula_protocol::ApiError;
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

pub async fn handle(
    st: Arc<GatewayState>,
    path: &'static str,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match run(st, path, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
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
    body: Bytes,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let id = st.auth.authenticate(headers).await.inspect_err(|e| {
        if matches!(e, ApiError::Unauthorized(_)) {
            metrics::counter!("aula_auth_failures_total").increment(1);
        }
    })?;
    let (adm, mut obj) = aula_protocol::peek_admission(&body)?;
    let route = st.router.get(&adm.model)?.clone();
    // Aliases and renamed `url` models: the engine gets the name it knows;
    // limits, the ledger and metrics use the configured name.
    let mut adm = adm;
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
    if adm.max_tokens.is_none()
        && let Some(m) = resv.max_tokens
    {
        obj.insert("max_tokens".into(), json!(m));
        rewritten = true;
    }
    if adm.stream && !adm.include_usage {
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
        prompt_tokens: None,
        completion_tokens: None,
        chunks: 0,
        done: false,
        in_use: st.lifecycle.enter(&adm.model),
    };
    // A model that is not loaded starts now; this request waits for it.
    if let Err(e) = st.lifecycle.ensure_loaded(&adm.model).await {
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
    if let Err(e) = st.lifecycle.ensure_loaded(&adm.model).await {
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

    let resp = match route.backend.forward(path, body).await {
        Ok(r) => r,
        Err(e) => return Err(fl.fail(e).await),
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
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    /// Content chunks seen (a stand-in for completion tokens without usage).
    chunks: u64,
    done: bool,
    /// The model is in use until this request ends (no eviction meanwhile).
    in_use: Option<crate::lifecycle::InUse>,
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
        let used = self.prompt_tokens.unwrap_or(0) + completion.unwrap_or(0);
        if let Some(mut p) = self.permit.take() {
            p.charge(self.prompt_tokens, completion.unwrap_or(0));
            drop(p);
            gauges(&self.model, &self.queue);
        }
        if let Some(r) = self.resv.take() {
            self.st.limiter.finish(&r, used as i64);
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
            prompt_tokens: self.prompt_tokens.map(|p| p as i64),
            completion_tokens: completion.map(|c| c as i64),
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
}
