//! Prometheus metrics at `/metrics`. Labels are models, statuses and limit
//! kinds only: per-user figures live in the ledger, not here.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Install the process-wide recorder (once) and return its handle.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!("metrics are off: {e}");
                    None
                }
            }
        })
        .as_ref()
}

pub fn render() -> String {
    handle().map(|h| h.render()).unwrap_or_default()
}

pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!("aula_requests_total", "Requests by model and final status");
    describe_counter!(
        "aula_tokens_total",
        "Tokens by model and kind (prompt, completion)"
    );
    describe_gauge!("aula_queue_depth", "Requests waiting for a slot, by model");
    describe_gauge!("aula_slots_busy", "Engine slots in use, by model");
    describe_gauge!("aula_slots", "Engine slots, by model");
    describe_gauge!(
        "aula_uploads_under_way",
        "File uploads whose bodies are being read, all users together"
    );
    describe_histogram!(
        "aula_queue_wait_seconds",
        "Time from arrival to a free slot"
    );
    describe_histogram!(
        "aula_time_to_first_token_seconds",
        "Time from arrival to the first token"
    );
    describe_histogram!(
        "aula_request_duration_seconds",
        "Time from arrival to the last byte"
    );
    describe_counter!(
        "aula_limit_refusals_total",
        "Requests refused by a limit or quota, by kind"
    );
    describe_counter!(
        "aula_auth_failures_total",
        "Requests refused for lack of valid credentials"
    );
}

/// A client connection closed on arrival: the connection cap is reached.
pub fn connection_refused() {
    metrics::counter!("aula_connections_refused_total").increment(1);
}

/// A request refused for lack of valid credentials.
pub fn auth_refused(e: &aula_protocol::ApiError) {
    if matches!(e, aula_protocol::ApiError::Unauthorized(_)) {
        metrics::counter!("aula_auth_failures_total").increment(1);
    }
}

/// A request refused by a limit, a quota or a full queue (by its code).
pub fn limit_refused(e: &aula_protocol::ApiError) {
    use aula_protocol::ApiError;
    if let ApiError::RateLimited { code, .. } | ApiError::Forbidden { code, .. } = e {
        metrics::counter!("aula_limit_refusals_total", "kind" => *code).increment(1);
    }
}

/// A model's metrics that every request updates, as handles made once: a
/// handle updates its metric without building and looking up its name and
/// labels again (that lookup was 3% of the gateway's CPU per request).
struct ModelMetrics {
    queue_depth: metrics::Gauge,
    slots_busy: metrics::Gauge,
    queue_wait: metrics::Histogram,
    answered: metrics::Counter,
    prompt_tokens: metrics::Counter,
    completion_tokens: metrics::Counter,
    ttft: metrics::Histogram,
    duration: metrics::Histogram,
}

impl ModelMetrics {
    fn new(model: &str) -> ModelMetrics {
        let m = || model.to_string();
        ModelMetrics {
            queue_depth: metrics::gauge!("aula_queue_depth", "model" => m()),
            slots_busy: metrics::gauge!("aula_slots_busy", "model" => m()),
            queue_wait: metrics::histogram!("aula_queue_wait_seconds", "model" => m()),
            answered: metrics::counter!("aula_requests_total", "model" => m(), "status" => "200"),
            prompt_tokens: metrics::counter!("aula_tokens_total", "model" => m(), "kind" => "prompt"),
            completion_tokens: metrics::counter!("aula_tokens_total", "model" => m(), "kind" => "completion"),
            ttft: metrics::histogram!("aula_time_to_first_token_seconds", "model" => m()),
            duration: metrics::histogram!("aula_request_duration_seconds", "model" => m()),
        }
    }
}

/// The handles of `model`'s metrics. Kept only once the recorder is
/// installed (a handle made before would update nothing for ever); models
/// are the configured ones, so the map is bounded by the configuration.
fn model(model: &str) -> std::sync::Arc<ModelMetrics> {
    use std::collections::HashMap;
    use std::sync::{Arc, RwLock};
    static MODELS: OnceLock<RwLock<HashMap<String, Arc<ModelMetrics>>>> = OnceLock::new();
    if !matches!(HANDLE.get(), Some(Some(_))) {
        return Arc::new(ModelMetrics::new(model));
    }
    let models = MODELS.get_or_init(Default::default);
    if let Some(m) = models.read().unwrap_or_else(|p| p.into_inner()).get(model) {
        return m.clone();
    }
    models
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .entry(model.to_string())
        .or_insert_with(|| Arc::new(ModelMetrics::new(model)))
        .clone()
}

/// A model's queue: waiting requests and busy slots.
pub fn queue_gauges(model_name: &str, s: &crate::fair::QueueStats) {
    let m = model(model_name);
    m.queue_depth.set(s.queued as f64);
    m.slots_busy.set(s.busy as f64);
}

/// File uploads under way, all users together.
pub fn uploads_under_way(n: usize) {
    metrics::gauge!("aula_uploads_under_way").set(n as f64);
}

/// How long a request waited for its slot.
pub fn queue_wait(model_name: &str, seconds: f64) {
    model(model_name).queue_wait.record(seconds);
}

/// A model's slots (at start-up).
pub fn slots(model: &str, slots: usize) {
    metrics::gauge!("aula_slots", "model" => model.to_string()).set(slots as f64);
}

/// A settled request: how it ended (the `status` label: the HTTP status,
/// `cancelled` or `timeout`), tokens, time to first token and duration.
pub fn request_done(
    model_name: &str,
    status: aula_store::Outcome,
    prompt: Option<u64>,
    completion: Option<u64>,
    ttft: Option<std::time::Duration>,
    duration: std::time::Duration,
) {
    use aula_store::Outcome;
    let m = model(model_name);
    match status {
        Outcome::Ok => m.answered.increment(1),
        other => {
            let label = match other {
                Outcome::Error(code) => code.to_string(),
                other => other.as_db().into_owned(),
            };
            metrics::counter!("aula_requests_total", "model" => model_name.to_string(), "status" => label)
                .increment(1);
        }
    }
    if let Some(p) = prompt {
        m.prompt_tokens.increment(p);
    }
    if let Some(c) = completion {
        m.completion_tokens.increment(c);
    }
    if let Some(t) = ttft {
        m.ttft.record(t.as_secs_f64());
    }
    m.duration.record(duration.as_secs_f64());
}
