//! A streamed answer on its way to the client: server-sent events are
//! watched for usage and the first token, the usage chunk the client did
//! not ask for is removed, and `data: [DONE]` is held back until the
//! request is settled (its ledger row committed).

use super::settle::InFlight;
use aula_protocol::ApiError;
use aula_protocol::sse::{SseEvent, SseReader};
use aula_store::Outcome;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;

/// The client's answer: the engine's stream, watched and settled at its end.
pub(super) fn respond(fl: InFlight, resp: Response<Body>, strip_usage: bool) -> Response {
    let (parts, upstream) = resp.into_parts();
    let tracker = SseTracker {
        fl,
        strip_usage,
        reader: SseReader::default(),
        saw_done: false,
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
                        let _ = t.fl.complete(Outcome::Error(502)).await;
                        out.extend_from_slice(&error_event(&t.fl.model, &e.to_string()));
                        return Some((Ok(Bytes::from(out)), None));
                    }
                    None => {
                        let mut out = t.flush();
                        let status = if t.saw_done {
                            Outcome::Ok
                        } else {
                            Outcome::Error(502)
                        };
                        let recorded = t.fl.complete(status).await;
                        if let (true, Err(e)) = (t.saw_done, &recorded) {
                            // No `[DONE]` for an answer the ledger lacks.
                            out.extend_from_slice(&ledger_error_event(e));
                        } else if t.saw_done {
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
    Response::from_parts(parts, Body::from_stream(stream))
}

/// An OpenAI-style error event for a stream that cannot finish.
fn error_event(model: &str, why: &str) -> Vec<u8> {
    let e = ApiError::BadGateway(format!(
        "the engine for model `{model}` failed during the answer ({why}); the text above is incomplete"
    ));
    format!("data: {}\n\n", e.body()).into_bytes()
}

/// The error event that ends a stream whose final ledger row could not be
/// written, in place of `[DONE]`.
fn ledger_error_event(why: &str) -> Vec<u8> {
    let e = ApiError::StateUnavailable(format!(
        "{why}; the answer above could not be recorded, so it is not confirmed"
    ));
    format!("data: {}\n\n", e.body()).into_bytes()
}

/// Watches a stream of server-sent events on its way to the client: each
/// event is passed on as it came, or dropped whole.
struct SseTracker {
    fl: InFlight,
    strip_usage: bool,
    reader: SseReader,
    saw_done: bool,
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Does this chunk carry generated text (`"content":"x` or `"text":"x`)?
pub(super) fn has_text(data: &[u8]) -> bool {
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
        let mut out = Vec::with_capacity(chunk.len());
        for ev in self.reader.push(chunk) {
            self.event(ev, &mut out);
        }
        Bytes::from(out)
    }

    fn flush(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(ev) = self.reader.finish() {
            self.event(ev, &mut out);
        }
        out
    }

    fn event(&mut self, ev: SseEvent, out: &mut Vec<u8>) {
        if ev.is_done() {
            // Held back until the ledger has the record.
            self.saw_done = true;
            return;
        }
        let data = &ev.data;
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
                return;
            }
        }
        out.extend_from_slice(&ev.raw);
    }
}
