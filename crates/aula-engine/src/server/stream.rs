//! A streamed answer: the scheduler's events as server-sent chunks, with
//! tool calls streamed in pieces (a forced call) or held from a possible
//! marker and parsed at the end (`auto`), and reasoning split from content.

use super::*;

pub(super) struct StreamState {
    rx: UnboundedReceiver<Event>,
    _guard: Inflight,
    b: ResponseBuilder,
    include_usage: bool,
    first: bool,
    /// Events still to send after the generation is over.
    tail: std::collections::VecDeque<String>,
    done: bool,
    /// With tools offered: how the answer is streamed ([`aula_protocol::tool_stream`]).
    tools: Option<ToolStream>,
    /// A reasoning model's answer: `<think>` or harmony's analysis channel
    /// goes out as reasoning_content deltas.
    think: Option<aula_protocol::reasoning::Splitter>,
}

pub(super) fn stream_response(
    rx: UnboundedReceiver<Event>,
    guard: Inflight,
    b: ResponseBuilder,
    include_usage: bool,
    tools: Option<ToolStream>,
    think: Option<aula_protocol::reasoning::Splitter>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let state = StreamState {
        rx,
        _guard: guard,
        b,
        include_usage,
        first: true,
        tail: Default::default(),
        done: false,
        tools,
        think,
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(data) = s.tail.pop_front() {
                return Some((Ok(SseEvent::default().data(data)), s));
            }
            if s.done {
                return None;
            }
            match s.rx.recv().await {
                Some(Event::Text(t)) if s.tools.is_some() => tool_text(&mut s, &t),
                Some(Event::Text(t)) if s.think.is_some() => {
                    let parts = s.think.as_mut().map(|k| k.push(&t)).unwrap_or_default();
                    push_parts(&mut s, parts);
                }
                Some(Event::Text(t)) => {
                    let data = s.b.chunk(&t, s.first, None).to_string();
                    s.first = false;
                    return Some((Ok(SseEvent::default().data(data)), s));
                }
                Some(Event::Done { finish, usage }) => {
                    finish_stream(&mut s, finish, usage);
                }
                Some(Event::Error(e)) => {
                    s.tail.push_back(ApiError::Internal(e).body().to_string());
                    s.tail.push_back("[DONE]".into());
                    s.done = true;
                }
                None => {
                    s.tail.push_back(
                        ApiError::Internal("the engine stopped".into())
                            .body()
                            .to_string(),
                    );
                    s.done = true;
                }
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// How an answer offered tools is streamed.
pub(super) enum ToolStream {
    /// A forced call, streamed as it is generated.
    Forced { call: ForcedCall, started: bool },
    /// `auto`: text streams until a possible marker, the rest is held.
    Auto {
        spec: aula_protocol::ToolSpec,
        streamed: String,
        held: Option<String>,
    },
}

/// Generated text of an answer offered tools: what can go out now is queued.
pub(super) fn tool_text(s: &mut StreamState, t: &str) {
    let Some(tools) = s.tools.as_mut() else {
        return;
    };
    let mut out = Vec::new();
    match tools {
        ToolStream::Forced { call, started } => {
            for piece in call.push(t) {
                out.push(match piece {
                    CallPiece::Start(name) => {
                        *started = true;
                        s.b.call_start_chunk(0, &name, s.first)
                    }
                    CallPiece::Args(a) => s.b.call_args_chunk(0, &a),
                });
                s.first = false;
            }
        }
        ToolStream::Auto { streamed, held, .. } => match held {
            Some(h) => h.push_str(t),
            None => {
                // A whole answer's content is trimmed: so is the stream's start.
                let t = if streamed.is_empty() {
                    t.trim_start()
                } else {
                    t
                };
                let (live, rest) = match aula_protocol::tool_stream::hold_from(t) {
                    Some(i) => (&t[..i], Some(t[i..].to_string())),
                    None => (t, None),
                };
                if !live.is_empty() {
                    out.push(s.b.chunk(live, s.first, None));
                    s.first = false;
                    streamed.push_str(live);
                }
                *held = rest;
            }
        },
    }
    s.tail.extend(out.into_iter().map(|v| v.to_string()));
}

/// The end of an answer offered tools: for `auto`, the whole answer parsed
/// once — reasoning, the content not yet sent, each call. Whether it called.
pub(super) fn finish_tools(s: &mut StreamState, tools: ToolStream) -> bool {
    match tools {
        // A call whose arguments never closed (cut by max_tokens) is no call.
        ToolStream::Forced { call, started } => started && call.done(),
        ToolStream::Auto {
            spec,
            streamed,
            held,
        } => {
            let Some(held) = held else {
                return false;
            };
            let answer = spec.parse_answer(&format!("{streamed}{held}"));
            if answer.calls.is_empty() && answer.reasoning.is_none() {
                // Plain text after all: the rest exactly as written.
                if !held.is_empty() {
                    s.tail
                        .push_back(s.b.chunk(&held, s.first, None).to_string());
                    s.first = false;
                }
                return false;
            }
            // The content not yet sent: the parsed content (trimmed) less
            // what went out live.
            let content = answer.content.as_deref().map(|c| {
                let sent = streamed.trim();
                match c.strip_prefix(sent) {
                    Some(rest) if streamed.ends_with(char::is_whitespace) => rest.trim_start(),
                    Some(rest) => rest,
                    None => c,
                }
            });
            let content = content.filter(|c| !c.trim().is_empty());
            if content.is_some() || answer.reasoning.is_some() {
                let chunk =
                    s.b.text_chunk(content, answer.reasoning.as_deref(), s.first);
                s.tail.push_back(chunk.to_string());
                s.first = false;
            }
            for (i, (name, args)) in answer.calls.iter().enumerate() {
                let start = s.b.call_start_chunk(i, name, s.first);
                s.tail.push_back(start.to_string());
                s.first = false;
                s.tail.push_back(s.b.call_args_chunk(i, args).to_string());
            }
            !answer.calls.is_empty()
        }
    }
}

/// Reasoning and content deltas, queued in order.
pub(super) fn push_parts(
    s: &mut StreamState,
    parts: Vec<(aula_protocol::reasoning::Part, String)>,
) {
    use aula_protocol::reasoning::Part;
    for (part, text) in parts {
        let data = match part {
            Part::Content => s.b.chunk(&text, s.first, None),
            Part::Reasoning => s.b.answer_chunk(&aula_protocol::tool_parse::Parsed {
                content: None,
                reasoning: Some(text),
                calls: Vec::new(),
            }),
        };
        s.first = false;
        s.tail.push_back(data.to_string());
    }
}

pub(super) fn finish_stream(s: &mut StreamState, finish: FinishReason, usage: Usage) {
    let mut finish = finish;
    if let Some(mut k) = s.think.take() {
        let parts = k.finish();
        push_parts(s, parts);
    }
    if let Some(tools) = s.tools.take() {
        // As in a whole answer: a complete call makes it `tool_calls`.
        if finish_tools(s, tools) {
            finish = FinishReason::ToolCalls;
        }
    }
    if s.first && s.b.endpoint == Endpoint::Chat {
        s.tail.push_back(s.b.chunk("", true, None).to_string());
    }
    s.tail
        .push_back(s.b.chunk("", false, Some(finish)).to_string());
    if s.include_usage {
        s.tail.push_back(s.b.usage_chunk(usage).to_string());
    }
    s.tail.push_back("[DONE]".into());
    s.done = true;
}
