//! A trivial OpenAI-compatible server for measuring and testing the gateway
//! alone: every chat or text completion answers with a fixed text (or a few
//! SSE chunks when streaming). Usage:
//! `openai-mock [PORT] [--token-ms MS] [--stall-after-tokens N] [--host ADDR]
//! [--follow-max-tokens] [--slots N]`
//! (ADDR: the address to listen on, default 127.0.0.1; 0 = any
//! free port; with --token-ms, each of the 4 tokens takes that long, like a
//! real engine; with --stall-after-tokens, a streamed answer sends N tokens
//! and then nothing more, its connection held open — so a test can kill the
//! engine mid-stream once it has seen those tokens arrive; with
//! --follow-max-tokens, a paced stream has the request's `max_tokens` tokens
//! (at most 4,096) instead of 4; with --slots, at most N paced streams
//! generate at once and the rest wait their turn, first come first served,
//! like an engine's slots). It prints
//! `listening on http://...`; `GET /stats` tells how many requests it served
//! and the most it ever had in flight at once.

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const WORDS: [&str; 4] = ["Hello", " from", " the", " mock"];

static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static MAX_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static SERVED: AtomicUsize = AtomicUsize::new(0);
static TOKEN_MS: AtomicU64 = AtomicU64::new(0);
/// Streamed answers stop after this many tokens (usize::MAX: never).
static STALL_AFTER: AtomicUsize = AtomicUsize::new(usize::MAX);
/// Paced streams answer the request's `max_tokens`.
static FOLLOW_MAX_TOKENS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// The engine's slots, when limited.
static SLOTS: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> =
    std::sync::OnceLock::new();

struct Busy;
impl Busy {
    fn new() -> Busy {
        let now = IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
        MAX_IN_FLIGHT.fetch_max(now, Ordering::SeqCst);
        Busy
    }
}
impl Drop for Busy {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A fixed 4-dimensional vector per input, in OpenAI's shape.
async fn embed(body: Bytes) -> Response {
    SERVED.fetch_add(1, Ordering::SeqCst);
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let n = v["input"].as_array().map(Vec::len).unwrap_or(1);
    let data: Vec<Value> = (0..n)
        .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.5, 0.5, 0.5, 0.5]}))
        .collect();
    axum::Json(json!({"object": "list", "data": data, "model": "mock",
        "usage": {"prompt_tokens": n, "total_tokens": n}}))
    .into_response()
}

/// A chat completion, or with `text` a text completion (whole answers only;
/// streams are chat chunks either way).
async fn complete(body: Bytes, text: bool) -> Response {
    let busy = Busy::new();
    let token_ms = TOKEN_MS.load(Ordering::Relaxed);
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": {"message": e.to_string()}})),
            )
                .into_response();
        }
    };
    let model = v["model"].as_str().unwrap_or("mock").to_string();
    let usage = json!({"prompt_tokens": 8, "completion_tokens": WORDS.len(), "total_tokens": 8 + WORDS.len()});
    if v["stream"].as_bool() == Some(true) {
        if token_ms > 0 {
            // Paced: one chunk per token, the slot held until the last one.
            let model2 = model.clone();
            let tokens = if FOLLOW_MAX_TOKENS.load(Ordering::Relaxed) {
                v["max_tokens"]
                    .as_u64()
                    .map_or(WORDS.len(), |m| m.clamp(1, 4096) as usize)
            } else {
                WORDS.len()
            };
            let s = futures::stream::unfold((0usize, Some((busy, None))), move |(i, held)| {
                let model = model2.clone();
                async move {
                    let (busy, mut slot) = held?;
                    if slot.is_none()
                        && let Some(slots) = SLOTS.get()
                    {
                        slot = slots.clone().acquire_owned().await.ok();
                    }
                    if i >= STALL_AFTER.load(Ordering::Relaxed) {
                        // Sent what it was told to: hold the stream open,
                        // silent, until the process is killed.
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(token_ms)).await;
                    let chunk = if i < tokens {
                        let c = json!({"id": "mock", "object": "chat.completion.chunk", "created": 0, "model": model,
                            "choices": [{"index": 0, "delta": {"content": WORDS[i % WORDS.len()]}, "finish_reason": null}]});
                        format!("data: {c}\n\n")
                    } else {
                        let u = json!({"id": "mock", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [],
                            "usage": {"prompt_tokens": 8, "completion_tokens": tokens, "total_tokens": 8 + tokens}});
                        SERVED.fetch_add(1, Ordering::SeqCst);
                        drop((busy, slot));
                        return Some((
                            Ok::<_, std::io::Error>(format!("data: {u}\n\ndata: [DONE]\n\n")),
                            (i + 1, None),
                        ));
                    };
                    Some((Ok(chunk), (i + 1, Some((busy, slot)))))
                }
            });
            return (
                [(header::CONTENT_TYPE, "text/event-stream")],
                axum::body::Body::from_stream(s),
            )
                .into_response();
        }
        SERVED.fetch_add(1, Ordering::SeqCst);
        let mut out = String::new();
        for (i, w) in WORDS.iter().enumerate() {
            let delta = if i == 0 {
                json!({"role": "assistant", "content": w})
            } else {
                json!({"content": w})
            };
            let chunk = json!({"id": "mock", "object": "chat.completion.chunk", "created": 0, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": null}]});
            out.push_str(&format!("data: {chunk}\n\n"));
        }
        let fin = json!({"id": "mock", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        out.push_str(&format!("data: {fin}\n\n"));
        let u = json!({"id": "mock", "object": "chat.completion.chunk", "created": 0, "model": model, "choices": [], "usage": usage});
        out.push_str(&format!("data: {u}\n\ndata: [DONE]\n\n"));
        return ([(header::CONTENT_TYPE, "text/event-stream")], out).into_response();
    }
    if token_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(
            token_ms * WORDS.len() as u64,
        ))
        .await;
    }
    SERVED.fetch_add(1, Ordering::SeqCst);
    drop(busy);
    if text {
        return axum::Json(json!({
            "id": "mock", "object": "text_completion", "created": 0, "model": model,
            "choices": [{"index": 0, "text": WORDS.concat(), "finish_reason": "stop"}],
            "usage": usage,
        }))
        .into_response();
    }
    axum::Json(json!({
        "id": "mock", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": WORDS.concat()}, "finish_reason": "stop"}],
        "usage": usage,
    }))
    .into_response()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port: u16 = args.first().and_then(|p| p.parse().ok()).unwrap_or(0);
    if let Some(i) = args.iter().position(|a| a == "--token-ms") {
        let ms = args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(0);
        TOKEN_MS.store(ms, Ordering::Relaxed);
    }
    if let Some(n) = args
        .iter()
        .position(|a| a == "--stall-after-tokens")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
    {
        STALL_AFTER.store(n, Ordering::Relaxed);
    }
    if args.iter().any(|a| a == "--follow-max-tokens") {
        FOLLOW_MAX_TOKENS.store(true, Ordering::Relaxed);
    }
    if let Some(n) = args
        .iter()
        .position(|a| a == "--slots")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        let _ = SLOTS.set(std::sync::Arc::new(tokio::sync::Semaphore::new(n)));
    }
    let app = Router::new()
        .route("/v1/chat/completions", post(|b| complete(b, false)))
        .route("/v1/completions", post(|b| complete(b, true)))
        .route("/v1/embeddings", post(embed))
        .route(
            "/v1/models",
            get(|| async {
                axum::Json(json!({"object": "list", "data": [{"id": "mock", "object": "model"}]}))
            }),
        )
        .route("/health", get(|| async { "ok" }))
        .route(
            "/stats",
            get(|| async {
                axum::Json(json!({
                    "served": SERVED.load(Ordering::SeqCst),
                    "in_flight": IN_FLIGHT.load(Ordering::SeqCst),
                    "max_in_flight": MAX_IN_FLIGHT.load(Ordering::SeqCst),
                }))
            }),
        );
    let host = args
        .iter()
        .position(|a| a == "--host")
        .and_then(|i| args.get(i + 1))
        .map_or("127.0.0.1", String::as_str);
    let listener = tokio::net::TcpListener::bind((host, port)).await?;
    println!(
        "openai-mock: listening on http://{}",
        listener.local_addr()?
    );
    axum::serve(
        listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        }),
        app,
    )
    .await
}
