use crate::run::{BenchConfig, Sample};
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Microseconds, auto-resizing, 3 significant digits.
#[allow(clippy::expect_used)] // constant arguments that hdrhistogram documents as valid
fn hist() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits is a valid precision")
}

fn summarize(h: &Histogram<u64>) -> Summary {
    if h.is_empty() {
        return Summary::default();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Summary {
        count: h.len(),
        mean_ms: h.mean() / 1000.0,
        p50_ms: ms(h.value_at_quantile(0.50)),
        p95_ms: ms(h.value_at_quantile(0.95)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    }
}

fn rec(h: &mut Histogram<u64>, d: Duration) {
    let _ = h.record((d.as_micros() as u64).max(1));
}

struct PerUser {
    ok: u64,
    errors: u64,
    completion_tokens: u64,
    ttft: Histogram<u64>,
    e2e: Histogram<u64>,
}

pub struct Recorder {
    ttft: Histogram<u64>,
    /// Users below this number are the heavy ones (0: none).
    heavy_below: usize,
    /// Time to first token of the heavy users, and of every other user.
    heavy_ttft: Histogram<u64>,
    others_ttft: Histogram<u64>,
    itl: Histogram<u64>,
    e2e: Histogram<u64>,
    /// Each streamed answer's rate after its first token, in milli-tokens/s.
    rate: Histogram<u64>,
    ok: u64,
    /// Answers closed at the end of a --duration window.
    cut: u64,
    errors: BTreeMap<String, u64>,
    prompt_tokens: u64,
    completion_tokens: u64,
    retries: u64,
    users: Vec<PerUser>,
}

impl Recorder {
    /// `heavy`: how many users (0, 1, ...) are the heavy ones, for the
    /// split of time to first token.
    pub fn new(users: usize, heavy: usize) -> Self {
        Recorder {
            ttft: hist(),
            heavy_below: heavy,
            heavy_ttft: hist(),
            others_ttft: hist(),
            itl: hist(),
            e2e: hist(),
            rate: hist(),
            ok: 0,
            cut: 0,
            errors: BTreeMap::new(),
            prompt_tokens: 0,
            completion_tokens: 0,
            retries: 0,
            users: (0..users)
                .map(|_| PerUser {
                    ok: 0,
                    errors: 0,
                    completion_tokens: 0,
                    ttft: hist(),
                    e2e: hist(),
                })
                .collect(),
        }
    }

    pub fn add(&mut self, s: &Sample) {
        let Some(u) = self.users.get_mut(s.user) else {
            return;
        };
        if s.retried {
            self.retries += 1;
        }
        if !s.ok && !s.cut {
            *self
                .errors
                .entry(s.error_kind.clone().unwrap_or_else(|| "unknown".into()))
                .or_default() += 1;
            u.errors += 1;
            return;
        }
        // An answer closed at the end of a --duration window counts its
        // time to first token and the tokens it sent inside the window; it
        // has no end.
        self.completion_tokens += s.counted_tokens;
        u.completion_tokens += s.counted_tokens;
        if let Some(t) = s.ttft {
            rec(&mut self.ttft, t);
            rec(&mut u.ttft, t);
            if s.user < self.heavy_below {
                rec(&mut self.heavy_ttft, t);
            } else {
                rec(&mut self.others_ttft, t);
            }
        }
        for d in &s.itl {
            rec(&mut self.itl, *d);
        }
        if s.cut {
            self.cut += 1;
            return;
        }
        self.ok += 1;
        u.ok += 1;
        self.prompt_tokens += s.prompt_tokens;
        if let Some(t) = s.ttft {
            let after = s.e2e.saturating_sub(t).as_secs_f64();
            if s.completion_tokens > 1 && after > 0.0 {
                let tps = (s.completion_tokens - 1) as f64 / after;
                let _ = self.rate.record(((tps * 1000.0) as u64).max(1));
            }
        }
        rec(&mut self.e2e, s.e2e);
        rec(&mut u.e2e, s.e2e);
    }

    pub fn report(&self, elapsed: Duration, cfg: &BenchConfig) -> Report {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Report {
            url: cfg.url.clone(),
            model: cfg.model.clone(),
            stream: cfg.stream,
            think_s: cfg.think.map(|d| d.as_secs_f64()),
            open_loop: cfg.open_loop,
            users: cfg.users,
            concurrency: cfg.concurrency,
            duration_s: secs,
            requests_ok: self.ok,
            requests_cut: self.cut,
            requests_failed: self.errors.values().sum(),
            errors: self.errors.clone(),
            retries: self.retries,
            requests_per_s: self.ok as f64 / secs,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            output_tokens_per_s: self.completion_tokens as f64 / secs,
            ttft: summarize(&self.ttft),
            heavy_user_ttft: (self.heavy_below > 0).then(|| summarize(&self.heavy_ttft)),
            other_users_ttft: (self.heavy_below > 0).then(|| summarize(&self.others_ttft)),
            itl: summarize(&self.itl),
            e2e: summarize(&self.e2e),
            answer_rate: (cfg.stream && !self.rate.is_empty()).then(|| Rates {
                count: self.rate.len(),
                p5_tps: self.rate.value_at_quantile(0.05) as f64 / 1000.0,
                p50_tps: self.rate.value_at_quantile(0.50) as f64 / 1000.0,
                p95_tps: self.rate.value_at_quantile(0.95) as f64 / 1000.0,
            }),
            per_user: self
                .users
                .iter()
                .enumerate()
                .map(|(i, u)| UserReport {
                    user: i,
                    requests_ok: u.ok,
                    requests_failed: u.errors,
                    completion_tokens: u.completion_tokens,
                    ttft: summarize(&u.ttft),
                    e2e: summarize(&u.e2e),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct UserReport {
    pub user: usize,
    pub requests_ok: u64,
    pub requests_failed: u64,
    pub completion_tokens: u64,
    pub ttft: Summary,
    pub e2e: Summary,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub url: String,
    pub model: String,
    pub stream: bool,
    /// With --think: the mean seconds each user waits before a request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub think_s: Option<f64>,
    /// With --open-loop: the thinking users' questions came at times fixed
    /// from the start, not after their answers.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub open_loop: bool,
    pub users: usize,
    pub concurrency: usize,
    /// The measured time: with --duration, the window (answers still
    /// running at its end are closed there and counted up to it).
    pub duration_s: f64,
    pub requests_ok: u64,
    /// With --duration: streamed answers closed at the window's end, after
    /// their first token; their tokens inside the window are counted.
    pub requests_cut: u64,
    pub requests_failed: u64,
    pub errors: BTreeMap<String, u64>,
    /// Requests re-sent once because the server closed a kept-alive connection under them.
    pub retries: u64,
    pub requests_per_s: f64,
    /// Of the answers that ended (a usage comes with an answer's end).
    pub prompt_tokens: u64,
    /// Output tokens received in the measured time (with --duration, a
    /// streamed answer cut at the window's end counts its text chunks
    /// inside it: one per token from llama.cpp engines and Aula's).
    pub completion_tokens: u64,
    pub output_tokens_per_s: f64,
    /// Time to first token (for non-streaming requests: the whole response).
    pub ttft: Summary,
    /// With --heavy: user 0's time to first token, and everyone else's;
    /// with --think and --heavy-users K: users 0..K's, and everyone else's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heavy_user_ttft: Option<Summary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other_users_ttft: Option<Summary>,
    /// Time between streamed chunks that carry text.
    pub itl: Summary,
    pub e2e: Summary,
    /// Streamed answers' rate after their first token (tokens after the
    /// first over the time after it), one figure per answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer_rate: Option<Rates>,
    pub per_user: Vec<UserReport>,
}

/// Tokens-per-second percentiles, one figure per answer.
#[derive(Debug, Clone, Serialize)]
pub struct Rates {
    pub count: u64,
    pub p5_tps: f64,
    pub p50_tps: f64,
    pub p95_tps: f64,
}

impl Report {
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let line = |name: &str, m: &Summary| {
            format!(
                "  {name:<22} p50 {:>9.2}  p95 {:>9.2}  p99 {:>9.2}  max {:>9.2}  (n={})\n",
                m.p50_ms, m.p95_ms, m.p99_ms, m.max_ms, m.count
            )
        };
        s.push_str(&format!(
            "aula bench: {} model={} users={} concurrency={} stream={}\n",
            self.url, self.model, self.users, self.concurrency, self.stream
        ));
        if let Some(t) = self.think_s {
            s.push_str(&format!(
                "  each user thinks {t:.1} s on average before each request{}\n",
                if self.open_loop {
                    " (after sending the last one, not after its answer)"
                } else {
                    ""
                }
            ));
        }
        s.push_str(&format!(
            "  {} ok, {} failed in {:.2}s: {:.1} requests/s, {:.1} output tokens/s ({} prompt, {} completion tokens)\n",
            self.requests_ok, self.requests_failed, self.duration_s, self.requests_per_s, self.output_tokens_per_s,
            self.prompt_tokens, self.completion_tokens
        ));
        if self.requests_cut > 0 {
            s.push_str(&format!(
                "  {} answers were still streaming when the time was up: closed then, their tokens so far counted\n",
                self.requests_cut
            ));
        }
        s.push_str("  latency (ms):\n");
        s.push_str(&line("time to first token", &self.ttft));
        if let (Some(h), Some(o)) = (&self.heavy_user_ttft, &self.other_users_ttft) {
            s.push_str(&line("  heavy user(s)", h));
            s.push_str(&line("  other users", o));
        }
        if self.stream {
            s.push_str(&line("inter-token", &self.itl));
        }
        s.push_str(&line("end to end", &self.e2e));
        if let Some(r) = &self.answer_rate {
            s.push_str(&format!(
                "  answer rate (tok/s)    p5 {:>10.1}  p50 {:>9.1}  p95 {:>9.1}  (n={})\n",
                r.p5_tps, r.p50_tps, r.p95_tps, r.count
            ));
        }
        if self.retries > 0 {
            s.push_str(&format!("  {} requests were re-sent once: the server had closed the kept-alive connection\n", self.retries));
        }
        if !self.errors.is_empty() {
            s.push_str("  errors:\n");
            for (k, v) in &self.errors {
                s.push_str(&format!("    {k:<20} {v}\n"));
            }
        }
        if self.per_user.len() > 1 {
            s.push_str("  per user:   ok  failed  tokens   ttft p50   ttft p95    e2e p95 (ms)\n");
            for u in &self.per_user {
                s.push_str(&format!(
                    "    {:>4} {:>6} {:>7} {:>7} {:>10.2} {:>10.2} {:>10.2}\n",
                    u.user,
                    u.requests_ok,
                    u.requests_failed,
                    u.completion_tokens,
                    u.ttft.p50_ms,
                    u.ttft.p95_ms,
                    u.e2e.p95_ms
                ));
            }
        }
        s
    }
}
