//! The chat's server-sent events, turned into the Responses API's events.

use super::*;
use aula_protocol::FinishReason;
use aula_protocol::wire::CallAssembler;
use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

pub(super) struct Streamed {
    pub(super) shell: Shell,
    pub(super) fs_id: String,
    pub(super) msg_id: String,
    pub(super) p: Parsed,
    pub(super) sources: Vec<crate::rag::search::Found>,
    pub(super) searched: bool,
}

pub(super) struct Events {
    pub(super) seq: u64,
}

impl Events {
    pub(super) fn event(&mut self, kind: &str, mut data: Value) -> Vec<u8> {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        format!("event: {kind}\ndata: {data}\n\n").into_bytes()
    }
}

/// The chat's chunks, as the Responses API streams them.
pub(super) fn stream(upstream: crate::pipeline::ChatEvents, s: Streamed) -> Response {
    let mut ev = Events { seq: 0 };
    let mut head = Vec::new();
    let in_progress = s
        .shell
        .object("in_progress", Vec::new(), Value::Null, Value::Null);
    head.extend(ev.event("response.created", json!({"response": in_progress})));
    head.extend(ev.event("response.in_progress", json!({"response": in_progress})));
    let mut index = 0;
    if s.searched {
        let item = search_item(&s.fs_id, &s.p, &s.sources, "in_progress");
        head.extend(ev.event(
            "response.output_item.added",
            json!({"output_index": 0, "item": item}),
        ));
        for k in ["in_progress", "searching", "completed"] {
            head.extend(ev.event(
                &format!("response.file_search_call.{k}"),
                json!({"output_index": 0, "item_id": s.fs_id}),
            ));
        }
        let item = search_item(&s.fs_id, &s.p, &s.sources, "completed");
        head.extend(ev.event(
            "response.output_item.done",
            json!({"output_index": 0, "item": item}),
        ));
        index = 1;
    }
    head.extend(ev.event("response.output_item.added", json!({"output_index": index, "item": message_item(&s.msg_id, "", Vec::new(), "in_progress")})));
    head.extend(ev.event("response.content_part.added", json!({"output_index": index, "item_id": s.msg_id, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}})));
    struct St {
        up: crate::pipeline::ChatEvents,
        ev: Events,
        s: Streamed,
        text: String,
        usage: (u64, u64),
        cut: bool,
        index: usize,
        done: bool,
        /// Function calls the chat made, assembled from their pieces.
        calls: CallAssembler,
    }
    let state = St {
        up: upstream,
        ev,
        s,
        text: String::new(),
        usage: (0, 0),
        cut: false,
        index,
        done: false,
        calls: CallAssembler::default(),
    };
    let body = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(Bytes::from(head)) }).chain(futures::stream::unfold(Some(state), |state| async move {
        let mut t = state?;
        loop {
            if t.done {
                return None;
            }
            let mut out = Vec::new();
            match t.up.next().await {
                Some(Ok(chunk)) => {
                    if let Some(c) = chunk.choices.first() {
                        if let Some(d) = c.delta.content.as_deref().filter(|d| !d.is_empty()) {
                            t.text.push_str(d);
                            out.extend(t.ev.event("response.output_text.delta", json!({"output_index": t.index, "item_id": t.s.msg_id, "content_index": 0, "delta": d, "logprobs": []})));
                        }
                        t.calls.push(&c.delta.tool_calls);
                        if c.finish_reason == Some(FinishReason::Length) {
                            t.cut = true;
                        }
                    }
                    if let Some(u) = chunk.usage {
                        t.usage = (u64::from(u.prompt_tokens), u64::from(u.completion_tokens));
                    }
                }
                Some(Err(e)) => {
                    let b = e.body();
                    out.extend(t.ev.event("error", json!({"code": b["error"]["code"], "message": b["error"]["message"], "param": null})));
                    let failed = t.s.shell.object("failed", Vec::new(), Value::Null, Value::Null);
                    out.extend(t.ev.event("response.failed", json!({"response": failed})));
                    t.done = true;
                }
                None => {
                    let notes = if t.s.searched { annotations(&t.text, &t.s.sources) } else { Vec::new() };
                    for (i, a) in notes.iter().enumerate() {
                        out.extend(t.ev.event("response.output_text.annotation.added", json!({"output_index": t.index, "item_id": t.s.msg_id, "content_index": 0, "annotation_index": i, "annotation": a})));
                    }
                    out.extend(t.ev.event("response.output_text.done", json!({"output_index": t.index, "item_id": t.s.msg_id, "content_index": 0, "text": t.text, "logprobs": []})));
                    out.extend(t.ev.event("response.content_part.done", json!({"output_index": t.index, "item_id": t.s.msg_id, "content_index": 0, "part": {"type": "output_text", "text": t.text, "annotations": notes, "logprobs": []}})));
                    let status = if t.cut { "incomplete" } else { "completed" };
                    let message = message_item(&t.s.msg_id, &t.text, notes, status);
                    out.extend(t.ev.event("response.output_item.done", json!({"output_index": t.index, "item": message})));
                    let mut output = Vec::new();
                    if t.s.searched {
                        output.push(search_item(&t.s.fs_id, &t.s.p, &t.s.sources, "completed"));
                    }
                    output.push(message);
                    // Function calls after the message, each as its own item.
                    let calls = std::mem::take(&mut t.calls).finish();
                    for (k, c) in calls.iter().enumerate() {
                        let index = t.index + 1 + k;
                        let item = function_call_out(c);
                        let mut started = item.clone();
                        started["status"] = json!("in_progress");
                        started["arguments"] = json!("");
                        out.extend(t.ev.event("response.output_item.added", json!({"output_index": index, "item": started})));
                        out.extend(t.ev.event("response.function_call_arguments.delta", json!({"output_index": index, "item_id": item["id"], "delta": item["arguments"]})));
                        out.extend(t.ev.event("response.function_call_arguments.done", json!({"output_index": index, "item_id": item["id"], "arguments": item["arguments"]})));
                        out.extend(t.ev.event("response.output_item.done", json!({"output_index": index, "item": item})));
                        output.push(item);
                    }
                    let incomplete = if t.cut { json!({"reason": "max_output_tokens"}) } else { Value::Null };
                    let done = t.s.shell.object(status, output, usage(t.usage.0, t.usage.1), incomplete);
                    out.extend(t.ev.event(if t.cut { "response.incomplete" } else { "response.completed" }, json!({"response": done})));
                    t.done = true;
                }
            }
            if !out.is_empty() {
                return Some((Ok(Bytes::from(out)), Some(t)));
            }
        }
    }));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}
