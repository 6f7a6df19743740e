//! The live view behind the web page: once a second, one [`Sample`] of the
//! box — requests in flight, queue depth per model, tokens per second in
//! and out, time to first token (p50/p95 over the last minute), refusals by
//! kind — kept in a ring of the last 15 minutes and pushed to every open
//! page (server-sent events) through one `watch` channel.
//!
//! Rules:
//! - Settled requests and refusals are counted as they happen ([`Live::done`],
//!   [`Live::refused`]): a few integer additions under one short lock, never
//!   I/O on the request path.
//! - Queue depths and in-flight counts are read by the sampler, not pushed.
//! - Nothing here names a user: the live view is per model and per kind.
//! - Memory is bounded: [`HISTORY`] samples, [`TTFT_KEPT`] latencies.

use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Samples kept: 15 minutes at one a second.
pub const HISTORY: usize = 900;
/// Times to first token kept for the percentiles (the last minute's, at most).
const TTFT_KEPT: usize = 20_000;
const TTFT_WINDOW_MS: i64 = 60_000;

/// One second of the box.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Sample {
    /// Unix ms at the end of the second.
    pub t: i64,
    pub in_flight: u64,
    /// Waiting for a slot, by model.
    pub queued: BTreeMap<String, usize>,
    /// Slots in use, by model.
    pub busy: BTreeMap<String, usize>,
    pub tokens_in_per_s: f64,
    pub tokens_out_per_s: f64,
    pub requests_per_s: f64,
    /// Over the requests that finished in the last minute.
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p95_ms: Option<f64>,
    /// Refused in this second, by kind (the error's code).
    pub refused: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Acc {
    tokens_in: u64,
    tokens_out: u64,
    requests: u64,
    refused: BTreeMap<String, u64>,
    /// (finished at, ms), oldest first.
    ttft: VecDeque<(i64, f64)>,
    history: VecDeque<Sample>,
    last_ms: Option<i64>,
}

pub struct Live {
    acc: Mutex<Acc>,
    tx: tokio::sync::watch::Sender<Arc<Sample>>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            acc: Mutex::default(),
            tx: tokio::sync::watch::channel(Arc::new(Sample::default())).0,
        }
    }
}

impl Live {
    fn acc(&self) -> std::sync::MutexGuard<'_, Acc> {
        self.acc.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A settled request: its tokens and time to first token.
    pub fn done(&self, prompt: Option<u64>, completion: Option<u64>, ttft: Option<Duration>) {
        let mut a = self.acc();
        a.requests += 1;
        a.tokens_in += prompt.unwrap_or(0);
        a.tokens_out += completion.unwrap_or(0);
        if let Some(t) = ttft {
            if a.ttft.len() >= TTFT_KEPT {
                a.ttft.pop_front();
            }
            a.ttft
                .push_back((aula_store::now_ms(), t.as_secs_f64() * 1000.0));
        }
    }

    /// A request refused by a limit, a quota or a full queue.
    pub fn refused(&self, e: &aula_protocol::ApiError) {
        use aula_protocol::ApiError;
        if let ApiError::RateLimited { code, .. } | ApiError::Forbidden { code, .. } = e {
            *self.acc().refused.entry((*code).to_string()).or_default() += 1;
        }
    }

    /// Close the second ending at `now_ms` with what the sampler read.
    pub fn sample(
        &self,
        now_ms: i64,
        in_flight: u64,
        queued: BTreeMap<String, usize>,
        busy: BTreeMap<String, usize>,
    ) -> Arc<Sample> {
        let s = {
            let mut a = self.acc();
            let secs = a
                .last_ms
                .map(|l| ((now_ms - l) as f64 / 1000.0).max(0.001))
                .unwrap_or(1.0);
            a.last_ms = Some(now_ms);
            while a
                .ttft
                .front()
                .is_some_and(|(t, _)| *t < now_ms - TTFT_WINDOW_MS)
            {
                a.ttft.pop_front();
            }
            let mut v: Vec<f64> = a.ttft.iter().map(|(_, ms)| *ms).collect();
            v.sort_by(f64::total_cmp);
            let s = Sample {
                t: now_ms,
                in_flight,
                queued,
                busy,
                tokens_in_per_s: a.tokens_in as f64 / secs,
                tokens_out_per_s: a.tokens_out as f64 / secs,
                requests_per_s: a.requests as f64 / secs,
                ttft_p50_ms: percentile(&v, 0.50),
                ttft_p95_ms: percentile(&v, 0.95),
                refused: std::mem::take(&mut a.refused),
            };
            a.tokens_in = 0;
            a.tokens_out = 0;
            a.requests = 0;
            if a.history.len() >= HISTORY {
                a.history.pop_front();
            }
            a.history.push_back(s.clone());
            Arc::new(s)
        };
        self.tx.send_replace(s.clone());
        s
    }

    /// The last 15 minutes, oldest first.
    pub fn history(&self) -> Vec<Sample> {
        self.acc().history.iter().cloned().collect()
    }

    /// Wakes at every new sample.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Sample>> {
        self.tx.subscribe()
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_sums_what_settled_and_the_ring_stays_bounded() {
        let live = Live::default();
        live.sample(1_000, 0, BTreeMap::new(), BTreeMap::new());
        live.done(Some(100), Some(20), Some(Duration::from_millis(50)));
        live.done(Some(10), None, Some(Duration::from_millis(150)));
        live.refused(&aula_protocol::ApiError::RateLimited {
            message: "slow down".into(),
            code: "requests_per_minute",
            retry_after_s: 1,
        });
        let s = live.sample(
            3_000,
            2,
            BTreeMap::from([("m".to_string(), 3)]),
            BTreeMap::new(),
        );
        // Two seconds since the last sample: per-second rates halve.
        assert_eq!(s.tokens_in_per_s, 55.0);
        assert_eq!(s.tokens_out_per_s, 10.0);
        assert_eq!(s.requests_per_s, 1.0);
        assert_eq!(s.in_flight, 2);
        assert_eq!(s.queued["m"], 3);
        assert_eq!(s.refused["requests_per_minute"], 1);
        assert!(s.ttft_p50_ms.is_some());
        // The next second starts empty, latencies stay for the minute.
        let s = live.sample(4_000, 0, BTreeMap::new(), BTreeMap::new());
        assert_eq!((s.tokens_in_per_s, s.requests_per_s), (0.0, 0.0));
        assert!(s.refused.is_empty());
        for i in 0..(HISTORY + 10) {
            live.sample(5_000 + i as i64 * 1000, 0, BTreeMap::new(), BTreeMap::new());
        }
        assert_eq!(live.history().len(), HISTORY);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.95), Some(95.0));
        assert_eq!(percentile(&[7.0], 0.95), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
