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
