//! A trivial OpenAI-compatible server for measuring the gateway alone:
//! every chat or text completion answers at once with a fixed text (or a
//! few SSE chunks when streaming). Usage: `openai-mock [PORT]` (0 = any free
//! port); it prints `listening on http://...`.

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use serde_json::{Value, json};

const WORDS: [&str; 4] = ["Hello", " from", " the", " mock"];

async fn complete(body: Bytes) -> Response {
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
    axum::Json(json!({
        "id": "mock", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": WORDS.concat()}, "finish_reason": "stop"}],
        "usage": usage,
    }))
    .into_response()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let app = Router::new()
        .route("/v1/chat/completions", post(complete))
        .route("/v1/completions", post(complete))
        .route(
            "/v1/models",
            get(|| async {
                axum::Json(json!({"object": "list", "data": [{"id": "mock", "object": "model"}]}))
            }),
        )
        .route("/health", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
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
