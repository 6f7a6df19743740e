//! The chat's chunks, turned into the Responses API's events (typed:
//! `aula_protocol::wire::ResponseEvent`).

use super::*;
use aula_protocol::FinishReason;
use aula_protocol::wire::{
    CallAssembler, EventBody, OutputContent, OutputItem, ResponseError, ResponseEvent,
};
use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;

pub(super) struct Streamed {
    pub(super) shell: Shell,
    pub(super) fs_id: String,
    pub(super) msg_id: String,
    pub(super) p: Parsed,
    pub(super) sources: Vec<crate::rag::search::Found>,
    pub(super) searched: bool,
}

/// Events written in order, numbered from 0.
#[derive(Default)]
pub(super) struct Events {
    seq: u64,
    out: Vec<u8>,
}

impl Events {
    pub(super) fn push(&mut self, body: EventBody) {
        let e = ResponseEvent {
            body,
            sequence_number: self.seq,
        };
        self.seq += 1;
        self.out.extend(e.to_sse().into_bytes());
    }

    /// What was written since the last take.
    fn take(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.out))
    }
}

/// The head of the stream: the Response created and in progress, the
/// search (done before the chat started), the message begun.
fn head(ev: &mut Events, s: &Streamed) -> usize {
    let running = || Box::new(s.shell.object(Ending::Running, Vec::new(), None));
    ev.push(EventBody::Created {
        response: running(),
    });
    ev.push(EventBody::InProgress {
        response: running(),
    });
    let mut index = 0;
    if s.searched {
        let item = search_item(&s.fs_id, &s.p, &s.sources, ItemStatus::InProgress);
        ev.push(EventBody::ItemAdded {
            output_index: 0,
            item,
        });
        let item_id = || s.fs_id.clone();
        ev.push(EventBody::SearchInProgress {
            output_index: 0,
            item_id: item_id(),
        });
        ev.push(EventBody::Searching {
            output_index: 0,
            item_id: item_id(),
        });
        ev.push(EventBody::SearchCompleted {
            output_index: 0,
            item_id: item_id(),
        });
        let item = search_item(&s.fs_id, &s.p, &s.sources, ItemStatus::Completed);
        ev.push(EventBody::ItemDone {
            output_index: 0,
            item,
        });
        index = 1;
    }
    let item = message_item(&s.msg_id, "", Vec::new(), ItemStatus::InProgress);
    ev.push(EventBody::ItemAdded {
        output_index: index,
        item,
    });
    ev.push(EventBody::PartAdded {
        output_index: index,
        item_id: s.msg_id.clone(),
        content_index: 0,
        part: OutputContent::text("", Vec::new()),
    });
    index
}

/// The stream as it goes.
struct Relay {
    up: crate::pipeline::ChatEvents,
    ev: Events,
    s: Streamed,
    text: String,
    usage: Option<ResponseUsage>,
    cut: bool,
    /// The message's output index.
    index: usize,
    done: bool,
    /// Function calls the chat made, assembled from their pieces.
    calls: CallAssembler,
}

impl Relay {
    /// One chat chunk: text out as a delta, calls and usage kept.
    fn chunk(&mut self, chunk: aula_protocol::wire::ChatChunk) {
        if let Some(c) = chunk.choices.first() {
            if let Some(d) = c.delta.content.as_deref().filter(|d| !d.is_empty()) {
                self.text.push_str(d);
                self.ev.push(EventBody::TextDelta {
                    output_index: self.index,
                    item_id: self.s.msg_id.clone(),
                    content_index: 0,
                    delta: d.to_string(),
                    logprobs: Vec::new(),
                });
            }
            self.calls.push(&c.delta.tool_calls);
            if c.finish_reason == Some(FinishReason::Length) {
                self.cut = true;
            }
        }
        if let Some(u) = chunk.usage {
            self.usage = Some(ResponseUsage::new(
                u64::from(u.prompt_tokens),
                u64::from(u.completion_tokens),
            ));
        }
    }

    /// The chat failed mid-answer: an `error` event, then the Response failed.
    fn failed(&mut self, e: &ApiError) {
        let code = e.code().unwrap_or("server_error").to_string();
        self.ev.push(EventBody::Error {
            code: Some(code),
            message: e.to_string(),
            param: None,
        });
        // The Response's error codes are a closed list: an engine failing
        // mid-answer is a `server_error` there (the event names it exactly).
        let error = ResponseError {
            code: "server_error".into(),
            message: e.to_string(),
        };
        let response = Box::new(self.s.shell.object(Ending::Failed(error), Vec::new(), None));
        self.ev.push(EventBody::Failed { response });
        self.done = true;
    }

    /// The chat is over: the message and its citations done, each call as
    /// its own item after it, and the Response completed (or incomplete).
    fn finish(&mut self) {
        let (index, id) = (self.index, self.s.msg_id.clone());
        let notes = if self.s.searched {
            annotations(&self.text, &self.s.sources)
        } else {
            Vec::new()
        };
        for (i, a) in notes.iter().enumerate() {
            self.ev.push(EventBody::AnnotationAdded {
                output_index: index,
                item_id: id.clone(),
                content_index: 0,
                annotation_index: i,
                annotation: a.clone(),
            });
        }
        self.ev.push(EventBody::TextDone {
            output_index: index,
            item_id: id.clone(),
            content_index: 0,
            text: self.text.clone(),
            logprobs: Vec::new(),
        });
        self.ev.push(EventBody::PartDone {
            output_index: index,
            item_id: id.clone(),
            content_index: 0,
            part: OutputContent::text(self.text.clone(), notes.clone()),
        });
        let status = if self.cut {
            ItemStatus::Incomplete
        } else {
            ItemStatus::Completed
        };
        let message = message_item(&id, &self.text, notes, status);
        self.ev.push(EventBody::ItemDone {
            output_index: index,
            item: message.clone(),
        });
        let mut output = Vec::new();
        if self.s.searched {
            let s = &self.s;
            output.push(search_item(
                &s.fs_id,
                &s.p,
                &s.sources,
                ItemStatus::Completed,
            ));
        }
        output.push(message);
        for (k, c) in std::mem::take(&mut self.calls).finish().iter().enumerate() {
            let output_index = index + 1 + k;
            let item = function_call_out(c, ItemStatus::Completed);
            let item_id = item.id().to_string();
            let mut started = item.clone();
            if let OutputItem::FunctionCall {
                status, arguments, ..
            } = &mut started
            {
                *status = ItemStatus::InProgress;
                arguments.clear();
            }
            self.ev.push(EventBody::ItemAdded {
                output_index,
                item: started,
            });
            self.ev.push(EventBody::ArgumentsDelta {
                output_index,
                item_id: item_id.clone(),
                delta: c.function.arguments.clone(),
            });
            self.ev.push(EventBody::ArgumentsDone {
                output_index,
                item_id,
                arguments: c.function.arguments.clone(),
            });
            self.ev.push(EventBody::ItemDone {
                output_index,
                item: item.clone(),
            });
            output.push(item);
        }
        let ending = if self.cut {
            Ending::Cut
        } else {
            Ending::Completed
        };
        let usage = Some(self.usage.unwrap_or_default());
        let response = Box::new(self.s.shell.object(ending, output, usage));
        self.ev.push(if self.cut {
            EventBody::Incomplete { response }
        } else {
            EventBody::Completed { response }
        });
        self.done = true;
    }
}

/// The chat's chunks, as the Responses API streams them.
pub(super) fn stream(upstream: crate::pipeline::ChatEvents, s: Streamed) -> Response {
    let mut ev = Events::default();
    let index = head(&mut ev, &s);
    let first = ev.take();
    let relay = Relay {
        up: upstream,
        ev,
        s,
        text: String::new(),
        usage: None,
        cut: false,
        index,
        done: false,
        calls: CallAssembler::default(),
    };
    let rest = futures::stream::unfold(relay, |mut r| async move {
        loop {
            if r.done {
                return None;
            }
            match r.up.next().await {
                Some(Ok(chunk)) => r.chunk(chunk),
                Some(Err(e)) => r.failed(&e),
                None => r.finish(),
            }
            let out = r.ev.take();
            if !out.is_empty() {
                return Some((Ok::<Bytes, std::io::Error>(out), r));
            }
        }
    });
    let body = futures::stream::once(async move { Ok(first) }).chain(rest);
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}
