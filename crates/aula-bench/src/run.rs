use crate::report::{Recorder, Report};
use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub enum Limit {
    Requests(u64),
    Duration(Duration),
}

#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Base URL of the server (`http://127.0.0.1:8080` or `.../v1`).
    pub url: String,
    pub model: String,
    pub users: usize,
    pub concurrency: usize,
    pub limit: Limit,
    /// Approximate prompt length in tokens (one common English word each).
    pub prompt_tokens: usize,
    pub max_tokens: u32,
    pub stream: bool,
    /// One key per simulated user; one key for all; or none.
    pub keys: Vec<String>,
    /// Sampling temperature sent with each request.
    pub temperature: f32,
    pub progress: bool,
    /// Fairness scenario: user 0 keeps this many requests in flight while
    /// every other user sends one at a time (concurrency = heavy + users - 1);
    /// with `think`, the other users think before each request.
    pub heavy: Option<usize>,
    /// A class: each user is one worker that waits a random time (exponential,
    /// this mean; seeded per user) before each request, as a student reads
    /// and types. Concurrency is then the number of users.
    pub think: Option<Duration>,
    /// In a class (`think`): users 0..heavy_users do not think, and ask for
    /// `heavy_max_tokens` (else `max_tokens`), back to back. With `heavy`,
    /// user 0 asks for `heavy_max_tokens`.
    pub heavy_users: usize,
    pub heavy_max_tokens: Option<u32>,
    /// With `think`: a thinking user's next request comes its think time
    /// after the previous one was sent, not after its answer (open-loop
    /// arrivals, the same times in every run); it may have several in
    /// flight.
    pub open_loop: bool,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

const WORDS: &[&str] = &[
    "the",
    "student",
    "asked",
    "about",
    "a",
    "model",
    "that",
    "can",
    "answer",
    "questions",
    "on",
    "history",
    "and",
    "science",
    "in",
    "one",
    "short",
    "paragraph",
    "with",
    "clear",
    "words",
    "for",
    "every",
    "class",
];

/// About `n` words; every request number gets its own prompt (it starts
/// with the number), so a server's prompt cache can reuse only what real
/// requests share (the chat template's system prefix), never a whole prompt.
pub fn prompt_of(n: usize, salt: usize) -> String {
    let mut s = String::with_capacity(n * 8 + 8);
    s.push_str(&salt.to_string());
    for i in 1..n.max(1) {
        s.push(' ');
        s.push_str(WORDS[(i * 7 + salt) % WORDS.len()]);
    }
    s
}

fn body_for(cfg: &BenchConfig, salt: usize, heavy: bool) -> Bytes {
    let max_tokens = match cfg.heavy_max_tokens {
        Some(m) if heavy => m,
        _ => cfg.max_tokens,
    };
    let mut v = serde_json::json!({
        "model": cfg.model,
        "messages": [{"role": "user", "content": prompt_of(cfg.prompt_tokens, salt)}],
        "max_tokens": max_tokens,
        "temperature": cfg.temperature,
        "stream": cfg.stream,
    });
    if cfg.stream {
        v["stream_options"] = serde_json::json!({"include_usage": true});
    }
    Bytes::from(v.to_string())
}

/// What one request measured.
#[derive(Debug, Default, Clone)]
pub struct Sample {
    pub user: usize,
    pub ok: bool,
    pub error_kind: Option<String>,
    pub ttft: Option<Duration>,
    pub itl: Vec<Duration>,
    pub e2e: Duration,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// What this answer adds to the run's output tokens: all of them, or
    /// in a `--duration` run those that arrived inside the window.
    pub counted_tokens: u64,
    /// The first attempt hit a connection the server had just closed.
    pub retried: bool,
    /// Still streaming when a `--duration` window ended: closed then, its
    /// tokens inside the window counted, its end-to-end time not.
    pub cut: bool,
}

/// One request. With `window_end` (a `--duration` run), a streamed answer
/// still running when the window ends is closed once it has its first token
/// (so every request sent in the window has a time to first token), and
/// only the text chunks that arrived inside the window are its tokens; a
/// whole answer that ends after the window keeps its latency but counts no
/// tokens (they cannot be placed in time).
async fn one(
    client: &HttpClient,
    url: &str,
    key: Option<&str>,
    body: Bytes,
    stream: bool,
    user: usize,
    window_end: Option<Instant>,
) -> Sample {
    let mut s = Sample {
        user,
        ..Default::default()
    };
    let start = Instant::now();
    // A server may close an idle keep-alive connection just as a request is
    // sent on it (llama-server does); like the OpenAI clients, retry that
    // once on a new connection, and count it.
    let mut attempt = 0;
    let resp = loop {
        attempt += 1;
        let mut req = Request::post(url).header("content-type", "application/json");
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let Ok(req) = req.body(Full::new(body.clone())) else {
            s.error_kind = Some("bad request".into());
            return s;
        };
        match client.request(req).await {
            Ok(r) => break r,
            Err(e) if attempt == 1 && closed_before_reply(&e) => {
                s.retried = true;
            }
            Err(e) => {
                if std::env::var_os("AULA_BENCH_DEBUG").is_some() {
                    eprintln!("aula bench: transport error: {e:?}");
                }
                s.error_kind = Some(if e.is_connect() {
                    "connect".into()
                } else {
                    "transport".into()
                });
                s.e2e = start.elapsed();
                return s;
            }
        }
    };
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let _ = body.collect().await;
        s.error_kind = Some(format!("http {}", status.as_u16()));
        s.e2e = start.elapsed();
        return s;
    }
    if !stream {
        match body.collect().await {
            Ok(b) => {
                s.e2e = start.elapsed();
                let v: serde_json::Value =
                    serde_json::from_slice(&b.to_bytes()).unwrap_or_default();
                s.prompt_tokens = v["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
                s.completion_tokens = v["usage"]["completion_tokens"].as_u64().unwrap_or(0);
                if window_end.is_none_or(|end| start + s.e2e <= end) {
                    s.counted_tokens = s.completion_tokens;
                }
                s.ttft = Some(s.e2e);
                s.ok = v["choices"].is_array();
                if !s.ok {
                    s.error_kind = Some("bad body".into());
                }
            }
            Err(_) => {
                s.e2e = start.elapsed();
                s.error_kind = Some("body".into());
            }
        }
        return s;
    }
    // Streaming: read SSE events; time the ones that carry text.
    let mut reader = aula_protocol::sse::SseReader::default();
    let mut last: Option<Instant> = None;
    let mut chunks = 0u64;
    // Text chunks that arrived inside the window (all of them without one).
    let mut in_window = 0u64;
    let mut done = false;
    let mut done_at = start;
    loop {
        // Past the window with a first token: this answer has been measured
        // (one that has sent [DONE] is read to its end, keeping its
        // connection for the next request).
        let cut_at = window_end.filter(|_| s.ttft.is_some() && !done);
        if cut_at.is_some_and(|end| Instant::now() >= end) {
            s.cut = true;
            break;
        }
        let next = match cut_at {
            Some(end) => match tokio::time::timeout_at(end.into(), body.frame()).await {
                Ok(f) => f,
                Err(_) => {
                    s.cut = true;
                    break;
                }
            },
            None => body.frame().await,
        };
        let Some(frame) = next else { break };
        let Ok(frame) = frame else {
            s.error_kind = Some("stream broken".into());
            s.e2e = start.elapsed();
            return s;
        };
        let Some(data) = frame.data_ref() else {
            continue;
        };
        let now = Instant::now();
        for event in reader.push(data) {
            if event.is_done() {
                done = true;
                done_at = now;
                continue;
            }
            if event.data.is_empty() {
                continue;
            }
            let v = event.json().unwrap_or_default();
            if v.get("error").is_some() {
                s.error_kind = Some("error event".into());
            }
            if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                s.prompt_tokens = u["prompt_tokens"].as_u64().unwrap_or(0);
                s.completion_tokens = u["completion_tokens"].as_u64().unwrap_or(0);
            }
            let text = v["choices"][0]["delta"]["content"]
                .as_str()
                .or(v["choices"][0]["text"].as_str());
            if text.is_some_and(|t| !t.is_empty()) {
                chunks += 1;
                if window_end.is_none_or(|end| now < end) {
                    in_window += 1;
                }
                match last {
                    None => s.ttft = Some(now - start),
                    Some(prev) => s.itl.push(now - prev),
                }
                last = Some(now);
            }
        }
    }
    s.e2e = start.elapsed();
    if s.cut {
        // Closed here (dropping the body drops the connection): the
        // tokens it had sent inside the window are what it produced there.
        s.completion_tokens = chunks;
        s.counted_tokens = in_window;
        return s;
    }
    if s.completion_tokens == 0 {
        s.completion_tokens = chunks;
    }
    s.counted_tokens = if window_end.is_some_and(|end| done_at > end) {
        // Ended after the window (it was waited for its first token).
        in_window
    } else {
        s.completion_tokens
    };
    if s.error_kind.is_none() && !done {
        s.error_kind = Some("no [DONE]".into());
    }
    s.ok = s.error_kind.is_none();
    s
}

/// [`one`], given up at `give_up` (a `--duration` run: one more window after
/// its end) if it has not returned by then: a request still without its
/// first token (or, not streamed, its whole answer) is counted as failed
/// ("no answer"), so a server that never answers does not hold the run open.
#[allow(clippy::too_many_arguments)]
async fn one_until(
    client: &HttpClient,
    url: &str,
    key: Option<&str>,
    body: Bytes,
    stream: bool,
    user: usize,
    window_end: Option<Instant>,
    give_up: Option<Instant>,
) -> Sample {
    let start = Instant::now();
    let asked = one(client, url, key, body, stream, user, window_end);
    let Some(give_up) = give_up else {
        return asked.await;
    };
    tokio::time::timeout_at(give_up.into(), asked)
        .await
        .unwrap_or_else(|_| Sample {
            user,
            error_kind: Some("no answer".into()),
            e2e: start.elapsed(),
            ..Default::default()
        })
}

/// The connection was closed before any response came back.
fn closed_before_reply(e: &hyper_util::client::legacy::Error) -> bool {
    use std::error::Error;
    e.source()
        .and_then(|s| s.downcast_ref::<hyper::Error>())
        .is_some_and(|h| h.is_incomplete_message() || h.is_canceled())
}

/// Run the benchmark and return its report.
pub async fn run(cfg: BenchConfig) -> anyhow::Result<Report> {
    if cfg.users == 0 || cfg.concurrency == 0 {
        bail!("--users and --concurrency must be at least 1");
    }
    let mut cfg = cfg;
    if cfg.think.is_some() {
        if cfg.heavy.is_some() && cfg.heavy_users > 0 {
            bail!("--heavy and --heavy-users are two ways to name heavy users: give one");
        }
        cfg.concurrency = cfg.users;
        if cfg.heavy_users >= cfg.users {
            bail!("--heavy-users must leave at least one student who thinks (fewer than --users)");
        }
    } else if cfg.heavy_users > 0 {
        bail!("--heavy-users is part of a class: give --think too");
    } else if cfg.open_loop {
        bail!("--open-loop is how thinking users ask: give --think too");
    }
    if cfg.heavy_max_tokens.is_some() && cfg.heavy.is_none() && cfg.heavy_users == 0 {
        bail!("--heavy-max-tokens is for heavy users: give --heavy or --heavy-users too");
    }
    if let Some(h) = cfg.heavy {
        if h == 0 || cfg.users < 2 {
            bail!(
                "--heavy needs at least 1 request and --users of 2 or more (user 0 is the heavy one)"
            );
        }
        cfg.concurrency = h + cfg.users - 1;
    }
    if let Limit::Requests(0) = cfg.limit {
        bail!("--requests must be at least 1");
    }
    let base = cfg.url.trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base);
    let url = format!("{base}/v1/chat/completions");
    let _: hyper::Uri = url
        .parse()
        .with_context(|| format!("{url} is not a valid URL"))?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(cfg.concurrency)
        .build(connector);
    let cfg = Arc::new(cfg);
    let issued = Arc::new(AtomicU64::new(0));
    let recorder = Arc::new(std::sync::Mutex::new(Recorder::new(
        cfg.users,
        if cfg.heavy.is_some() {
            1
        } else {
            cfg.heavy_users
        },
    )));
    let total = match cfg.limit {
        Limit::Requests(n) => n,
        Limit::Duration(d) => d.as_secs().max(1),
    };
    let bar = if cfg.progress {
        let b = indicatif::ProgressBar::new(total);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} {msg}",
        ) {
            b.set_style(style);
        }
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let start = Instant::now();
    let deadline = match cfg.limit {
        Limit::Duration(d) => Some(start + d),
        Limit::Requests(_) => None,
    };
    // Requests still unanswered one more window after it are given up.
    let give_up = match cfg.limit {
        Limit::Duration(d) => Some(start + d * 2),
        Limit::Requests(_) => None,
    };
    let mut workers = Vec::with_capacity(cfg.concurrency);
    for w in 0..cfg.concurrency {
        let (cfg, client, issued, recorder, url, bar) = (
            cfg.clone(),
            client.clone(),
            issued.clone(),
            recorder.clone(),
            url.clone(),
            bar.clone(),
        );
        workers.push(tokio::spawn(async move {
            let user = match cfg.heavy {
                Some(h) if w < h => 0,
                Some(h) => 1 + (w - h) % (cfg.users - 1),
                None => w % cfg.users,
            };
            let key = match cfg.keys.len() {
                0 => None,
                1 => Some(cfg.keys[0].clone()),
                n => Some(cfg.keys[user % n].clone()),
            };
            // User 0 with --heavy (its requests in flight), users below
            // --heavy-users in a class: neither thinks.
            let heavy = match cfg.heavy {
                Some(_) => user == 0,
                None => cfg.think.is_some() && user < cfg.heavy_users,
            };
            let mut thinking = cfg
                .think
                .filter(|_| !heavy)
                .map(|mean| (mean, StdRng::seed_from_u64(user as u64)));
            if cfg.open_loop
                && let Some((mean, mut rng)) = thinking
            {
                // Open loop: arrivals at fixed times from the start, each
                // request its own task.
                let mut at = Instant::now();
                let mut asked = tokio::task::JoinSet::new();
                // A refused key stops this user, as in the closed loop.
                let refused = Arc::new(std::sync::atomic::AtomicBool::new(false));
                loop {
                    let u: f64 = 1.0 - rng.r#gen::<f64>();
                    at += mean.mul_f64(-u.ln());
                    if deadline.is_some_and(|d| at >= d) {
                        break;
                    }
                    tokio::time::sleep_until(at.into()).await;
                    if refused.load(Ordering::Relaxed) {
                        break;
                    }
                    let n = issued.fetch_add(1, Ordering::Relaxed);
                    if let Limit::Requests(max) = cfg.limit
                        && n >= max
                    {
                        break;
                    }
                    let body = body_for(&cfg, n as usize, false);
                    let (stream, client, recorder, url, key, refused) = (
                        cfg.stream,
                        client.clone(),
                        recorder.clone(),
                        url.clone(),
                        key.clone(),
                        refused.clone(),
                    );
                    asked.spawn(async move {
                        let sample = one_until(
                            &client,
                            &url,
                            key.as_deref(),
                            body,
                            stream,
                            user,
                            deadline,
                            give_up,
                        )
                        .await;
                        if matches!(sample.error_kind.as_deref(), Some("http 401" | "http 403")) {
                            refused.store(true, Ordering::Relaxed);
                        }
                        if let Ok(mut r) = recorder.lock() {
                            r.add(&sample);
                        }
                    });
                    if let Limit::Requests(_) = cfg.limit {
                        bar.inc(1);
                    } else {
                        bar.set_position(start.elapsed().as_secs().min(total));
                    }
                }
                while asked.join_next().await.is_some() {}
                return;
            }
            loop {
                if let Some((mean, rng)) = thinking.as_mut() {
                    // Exponential: -mean x ln(u), u in (0, 1].
                    let u: f64 = 1.0 - rng.r#gen::<f64>();
                    let wait = mean.mul_f64(-u.ln());
                    if deadline.is_some_and(|d| Instant::now() + wait >= d) {
                        break;
                    }
                    tokio::time::sleep(wait).await;
                }
                let n = issued.fetch_add(1, Ordering::Relaxed);
                match (cfg.limit, deadline) {
                    (Limit::Requests(max), _) if n >= max => break,
                    (_, Some(d)) if Instant::now() >= d => break,
                    _ => {}
                }
                let body = body_for(&cfg, n as usize, heavy);
                let sample = one_until(
                    &client,
                    &url,
                    key.as_deref(),
                    body,
                    cfg.stream,
                    user,
                    deadline,
                    give_up,
                )
                .await;
                if let Ok(mut r) = recorder.lock() {
                    r.add(&sample);
                }
                // Refused credentials do not change by asking again: this
                // client stops, as a real one would (its refusal is counted).
                if matches!(sample.error_kind.as_deref(), Some("http 401" | "http 403")) {
                    break;
                }
                if let Limit::Requests(_) = cfg.limit {
                    bar.inc(1);
                } else {
                    bar.set_position(start.elapsed().as_secs().min(total));
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    bar.finish_and_clear();
    // A --duration run is measured over its window: answers still running
    // at its end were closed there, and what came after is not counted.
    let elapsed = match cfg.limit {
        Limit::Duration(d) => d,
        Limit::Requests(_) => start.elapsed(),
    };
    let r = recorder
        .lock()
        .map_err(|_| anyhow::anyhow!("recorder poisoned"))?;
    Ok(r.report(elapsed, &cfg))
}

#[cfg(test)]
mod tests {
    #[test]
    fn prompts_differ_per_request_and_have_n_words() {
        let a = super::prompt_of(32, 3);
        assert_eq!(a.split(' ').count(), 32);
        assert!(a.starts_with("3 "));
        let all: std::collections::HashSet<String> =
            (0..500).map(|i| super::prompt_of(32, i)).collect();
        assert_eq!(all.len(), 500);
    }
}
