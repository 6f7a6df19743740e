//! The engine's HTTP API: OpenAI chat and text completions, `/v1/models`,
//! `/health`. Handlers validate, template and tokenize, then hand a job to
//! the scheduler thread and relay its events (as SSE when streaming).

use crate::constraint::Grammar;
use crate::memory::MemoryReport;
use crate::scheduler::{Event, Job, Stats};
use crate::template::ChatTemplate;
use aula_protocol::template::CallFormat;
use aula_protocol::tool_stream::{CallPiece, ForcedCall};
use aula_protocol::{
    ApiError, Endpoint, FinishReason, GenerateRequest, Prompt, ResponseBuilder, ResponseFormat,
    Usage,
};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use llama_cpp_2::model::LlamaModel;
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

pub struct EngineState {
    pub name: String,
    pub model: Arc<LlamaModel>,
    pub template: ChatTemplate,
    pub jobs: std::sync::mpsc::Sender<Job>,
    pub stats: Arc<Stats>,
    pub memory: MemoryReport,
    /// What llama.cpp placed on which device (from its load log).
    pub placement: crate::devices::Placement,
    pub parallel: usize,
    /// Tokens one sequence may use (prompt + completion).
    pub context: u32,
    pub threads: usize,
    pub max_queue: usize,
    pub inflight: AtomicUsize,
    pub add_bos: bool,
    pub bos_text: String,
    /// The key every request must carry, when the engine was given one.
    pub api_key: Option<String>,
    /// Set for an embedding model (which serves /v1/embeddings and no chat).
    pub embed: Option<EmbedState>,
    /// LoRA adapters served on this base (`--lora-dir`): name and bytes, in
    /// the scheduler's order.
    pub adapters: Vec<(String, u64)>,
    /// The grammar engine for `response_format` and required tool calls.
    pub constraints: crate::constraint::Constraints,
}

/// An embedding model's side of the engine.
pub struct EmbedState {
    pub jobs: std::sync::mpsc::Sender<crate::embed::EmbedJob>,
    pub info: crate::embed::EmbeddingInfo,
    pub stats: Arc<crate::embed::EmbedStats>,
}

pub fn router(state: Arc<EngineState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/tokenize", post(tokenize))
        .route("/health", get(health))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_key,
        ))
        .with_state(state)
}

/// With a key configured, every route — `/health` too — answers 401 to a
/// request without `Authorization: Bearer <key>`: on a box where students
/// have shells, an engine's loopback port is reachable by all of them, and
/// only the gateway may use it.
async fn require_key(
    State(st): State<Arc<EngineState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(key) = &st.api_key {
        let given = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), key.as_bytes()) {
            return ApiError::Unauthorized(
                "this engine serves only the Aula gateway that started it".into(),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Equal byte strings, compared in time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn models(State(st): State<Arc<EngineState>>) -> Response {
    let mut names = vec![st.name.clone()];
    names.extend(st.adapters.iter().map(|(n, _)| n.clone()));
    axum::Json(aula_protocol::model_list(&names, "aula-engine")).into_response()
}

async fn health(State(st): State<Arc<EngineState>>) -> Response {
    if let Some(e) = &st.embed {
        return axum::Json(json!({
            "status": "ok",
            "model": st.name,
            "kind": "embedding",
            "embedding": e.info,
            "pending_inputs": e.stats.pending_inputs.load(Ordering::Relaxed),
            "batches": e.stats.batches.load(Ordering::Relaxed),
            "inputs_embedded": e.stats.inputs.load(Ordering::Relaxed),
            "sequences_per_batch": st.parallel,
            "threads": st.threads,
            "memory": st.memory,
            "placement": st.placement,
            "devices": crate::devices::devices(),
            "cpu": crate::cpu::report(),
        }))
        .into_response();
    }
    let busy = st.stats.busy.load(Ordering::Relaxed);
    axum::Json(json!({
        "status": "ok",
        "model": st.name,
        "slots": {"total": st.parallel, "busy": busy, "free": st.parallel.saturating_sub(busy)},
        "queue": {"length": st.stats.queued.load(Ordering::Relaxed), "capacity": st.max_queue},
        "kind": "chat",
        "adapters": st.adapters.iter().map(|(n, b)| json!({"name": n, "bytes": b})).collect::<Vec<_>>(),
        "prompt_tokens_reused": st.stats.reused_tokens.load(Ordering::Relaxed),
        "context_per_sequence": st.context,
        "n_ctx": st.context as usize * st.parallel,
        "threads": st.threads,
        "chat_template": st.template.source.as_str(),
        // How tools reach the model: its template's own format, or "system
        // message" (described there, calls written as JSON).
        "tools": st.template.tools.map_or("system message", |f| f.as_str()),
        "memory": st.memory,
        "placement": st.placement,
        "devices": crate::devices::devices(),
        "cpu": crate::cpu::report(),
    }))
    .into_response()
}

async fn chat(State(st): State<Arc<EngineState>>, body: Bytes) -> Response {
    match aula_protocol::parse_chat(&body) {
        Ok(req) => generate(st, req, Endpoint::Chat).await,
        Err(e) => e.into_response(),
    }
}

async fn completions(State(st): State<Arc<EngineState>>, body: Bytes) -> Response {
    match aula_protocol::parse_completion(&body) {
        Ok(req) => generate(st, req, Endpoint::Completion).await,
        Err(e) => e.into_response(),
    }
}

/// Decrements the in-flight count when the request is over, however it ends.
struct Inflight(Arc<EngineState>);

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn generate(st: Arc<EngineState>, req: GenerateRequest, endpoint: Endpoint) -> Response {
    if st.embed.is_some() && req.model == st.name {
        return ApiError::invalid_param(
            "model",
            format!(
                "`{}` is an embedding model: it answers /v1/embeddings, not {}",
                st.name,
                match endpoint {
                    Endpoint::Chat => "/v1/chat/completions",
                    Endpoint::Completion => "/v1/completions",
                }
            ),
        )
        .into_response();
    }
    let tools = req.tools.clone().filter(|t| t.active());
    // A reasoning model's `<think>` block, or harmony's analysis channel,
    // goes to reasoning_content (answers read for tools do this in their
    // own parser).
    let splits = endpoint == Endpoint::Chat && tools.is_none();
    let harmony = st.template.harmony;
    let thinks = st.template.thinks;
    // Rendering, tokenizing and compiling a grammar (which may be large, and
    // the first one builds the token index) run off the async workers.
    let set_up = {
        let req = req.clone();
        tokio::task::spawn_blocking(move || start(st, &req))
            .await
            .unwrap_or_else(|e| Err(ApiError::Internal(format!("request set-up failed: {e}"))))
    };
    match set_up {
        Ok(q) => {
            use aula_protocol::reasoning::{HarmonySplitter, Splitter, ThinkSplitter};
            let think = match () {
                _ if !splits => None,
                _ if harmony => Some(Splitter::Harmony(HarmonySplitter::new())),
                _ if thinks => Some(Splitter::Think(ThinkSplitter::new(q.opened))),
                _ => None,
            };
            let builder = ResponseBuilder::new(endpoint, &req.model);
            if req.stream {
                let tools = tools.map(|spec| match q.forced {
                    Some(key) => ToolStream::Forced {
                        call: ForcedCall::new(key),
                        started: false,
                    },
                    None => ToolStream::Auto {
                        spec,
                        streamed: String::new(),
                        held: None,
                    },
                });
                stream_response(q.rx, q.guard, builder, req.include_usage, tools, think)
                    .into_response()
            } else {
                whole_response(q.rx, q.guard, builder, tools, think).await
            }
        }
        Err(e) => e.into_response(),
    }
}

/// A queued request.
struct Queued {
    /// The events of its generation.
    rx: UnboundedReceiver<Event>,
    guard: Inflight,
    /// The prompt ends inside an opened `<think>` block.
    opened: bool,
    /// A call is forced: the key its arguments are written under.
    forced: Option<&'static str>,
}

/// Render, check and queue the request.
fn start(st: Arc<EngineState>, req: &GenerateRequest) -> Result<Queued, ApiError> {
    let adapter = if req.model == st.name {
        None
    } else {
        match st.adapters.iter().position(|(n, _)| *n == req.model) {
            Some(i) => Some(i),
            None => {
                // Adapters are named after their owners: not listed here.
                return Err(ApiError::ModelNotFound(format!(
                    "the model `{}` does not exist; this engine serves: {} (and {} adapters)",
                    req.model,
                    st.name,
                    st.adapters.len()
                )));
            }
        }
    };
    let tools = req.tools.as_ref().filter(|t| t.active());
    // The format a forced call is decoded in: the template's own when it
    // renders the tools, else the JSON object the system message asks for.
    let mut call_format = None;
    let (text, add_special) = match &req.prompt {
        Prompt::Chat(messages) => {
            let native = st.template.tools;
            let forced = tools.is_some_and(|t| t.required_call_schema("arguments").is_some());
            // A template that knows tools renders them, unless a call must
            // be forced in a format Aula cannot constrain. If it refuses
            // (some insist on their own call-id format or on one call per
            // turn), the conversation goes the plain way instead.
            let rendered = match (tools, native) {
                (Some(t), Some(f)) if !(forced && f == CallFormat::Other) => st
                    .template
                    .render_with_tools(messages, Some(&t.template_tools()))
                    .ok()
                    .map(|text| (text, Some(f))),
                // No tools now, but the history may hold calls and results.
                (None, Some(_)) => st.template.render(messages).ok().map(|t| (t, None)),
                _ => None,
            };
            let text = match rendered {
                Some((text, f)) => {
                    call_format = f;
                    text
                }
                None => {
                    let mut m = aula_protocol::plain_messages(messages);
                    if let Some(t) = tools {
                        // Offered tools are described in the system message.
                        let prompt = t.system_prompt();
                        match m.first_mut() {
                            Some(first) if first.role == "system" => {
                                first.content = format!("{}\n\n{prompt}", first.content);
                            }
                            _ => m.insert(0, aula_protocol::ChatMessage::text("system", prompt)),
                        }
                    }
                    st.template.render(&m)?
                }
            };
            // Templates that write the BOS token themselves must not get a second one.
            let has_bos = !st.bos_text.is_empty() && text.starts_with(&st.bos_text);
            let add = st.add_bos && !has_bos;
            (std::borrow::Cow::Owned(text), add)
        }
        Prompt::Text(t) => (std::borrow::Cow::Borrowed(t.as_str()), st.add_bos),
    };
    let opened = text.trim_end().ends_with("<think>");
    let tokens = st
        .model
        .vocab()
        .tokenize(text.as_bytes(), add_special, true);
    let n_prompt = tokens.len() as u64;
    let ctx = u64::from(st.context);
    if n_prompt == 0 {
        return Err(ApiError::invalid_param(
            "messages",
            "the prompt is empty after tokenization",
        ));
    }
    let max_tokens = match req.params.max_tokens {
        Some(m) if n_prompt + u64::from(m) > ctx => {
            return Err(ApiError::context_exceeded(format!(
                "this model's context is {ctx} tokens per request; the prompt is {n_prompt} tokens and max_tokens is {m} \
                 ({} in all). Shorten the prompt or lower max_tokens to at most {}.",
                n_prompt + u64::from(m),
                ctx.saturating_sub(n_prompt)
            )));
        }
        Some(m) => m,
        None if n_prompt >= ctx => {
            return Err(ApiError::context_exceeded(format!(
                "this model's context is {ctx} tokens per request; the prompt alone is {n_prompt} tokens"
            )));
        }
        None => (ctx - n_prompt) as u32,
    };
    let limit = st.parallel + st.max_queue;
    let before = st.inflight.fetch_add(1, Ordering::Relaxed);
    let guard = Inflight(st.clone());
    if before >= limit {
        return Err(ApiError::Overloaded(format!(
            "all {} slots are busy and {} requests are already waiting; try again shortly",
            st.parallel, st.max_queue
        )));
    }
    // A required call is decoded under its schema; otherwise response_format's.
    let args_key = match call_format {
        Some(CallFormat::Llama3) => "parameters",
        _ => "arguments",
    };
    let call = tools.and_then(|t| t.required_call_schema(args_key));
    let call_forced = call.is_some();
    let grammar = match call {
        Some(schema) => {
            let g = match call_format {
                Some(CallFormat::Hermes) => Grammar::Wrapped {
                    before: "<tool_call>\n".into(),
                    schema,
                    after: "\n</tool_call>".into(),
                },
                _ => Grammar::Json(schema),
            };
            Some(compile(&st, &g, "tools")?)
        }
        None => match &req.response_format {
            ResponseFormat::Text => None,
            ResponseFormat::JsonObject => Some(compile(
                &st,
                &Grammar::Json(json!({"type": "object"})),
                "response_format",
            )?),
            ResponseFormat::JsonSchema { schema, .. } => Some(compile(
                &st,
                &Grammar::Json(schema.clone()),
                "response_format",
            )?),
        },
    };
    // A forced call is never cut by a stop string: it ends with its grammar.
    let mut params = req.params.clone();
    if call_forced {
        params.stop.clear();
    }
    let (tx, rx) = unbounded_channel();
    let job = Job {
        tokens,
        max_tokens,
        // Harmony's markers are control tokens: rendered, so that channels
        // can be told apart.
        special: st.template.harmony && matches!(req.prompt, Prompt::Chat(_)),
        params,
        grammar,
        adapter,
        tx,
    };
    st.jobs
        .send(job)
        .map_err(|_| ApiError::Unavailable("the engine is shutting down".into()))?;
    Ok(Queued {
        rx,
        guard,
        opened,
        forced: call_forced.then_some(args_key),
    })
}

async fn whole_response(
    mut rx: UnboundedReceiver<Event>,
    _guard: Inflight,
    b: ResponseBuilder,
    tools: Option<aula_protocol::ToolSpec>,
    think: Option<aula_protocol::reasoning::Splitter>,
) -> Response {
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Text(t) => text.push_str(&t),
            Event::Done { finish, usage } => {
                if let Some(t) = &tools {
                    let answer = t.parse_answer(&text);
                    return axum::Json(b.full_answer(&answer, finish, usage)).into_response();
                }
                if let Some(mut sp) = think {
                    let mut parts = sp.push(&text);
                    parts.extend(sp.finish());
                    let (reasoning, content) = aula_protocol::reasoning::join(parts);
                    let answer = aula_protocol::tool_parse::Parsed {
                        content: Some(content),
                        reasoning,
                        calls: Vec::new(),
                    };
                    return axum::Json(b.full_answer(&answer, finish, usage)).into_response();
                }
                return axum::Json(b.full(&text, finish, usage)).into_response();
            }
            Event::Error(e) => return ApiError::Internal(e).into_response(),
        }
    }
    ApiError::Internal("the engine stopped before the request finished".into()).into_response()
}

struct StreamState {
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

fn stream_response(
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
enum ToolStream {
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
fn tool_text(s: &mut StreamState, t: &str) {
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
fn finish_tools(s: &mut StreamState, tools: ToolStream) -> bool {
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
fn push_parts(s: &mut StreamState, parts: Vec<(aula_protocol::reasoning::Part, String)>) {
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

fn finish_stream(s: &mut StreamState, finish: FinishReason, usage: Usage) {
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

/// `/v1/embeddings`: validate, turn every input into the model's tokens
/// (cl100k ids decoded to text first), check each against the model's
/// limit, and wait for the embedding loop's vectors.
/// `POST /tokenize`: `{"content": "text"}` answers `{"tokens": [ids]}`
/// (llama-server's shape); `{"content": ["a", "b"]}` answers one list per
/// string. Special tokens are added only with `"add_special": true`; text
/// that looks like a special token is text. An embedding model's answer
/// also carries `max_tokens`, the most one input may have (special tokens
/// included): what a vector store's chunks are measured against.
async fn tokenize(State(st): State<Arc<EngineState>>, body: Bytes) -> Response {
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return ApiError::invalid(format!("the body is not JSON: {e}")).into_response(),
    };
    let add_special = v["add_special"].as_bool().unwrap_or(false);
    let vocab = st.model.vocab();
    let one = |t: &str| -> Vec<i32> {
        vocab
            .tokenize(t.as_bytes(), add_special, false)
            .into_iter()
            .map(|t| t.0)
            .collect()
    };
    let tokens = match &v["content"] {
        serde_json::Value::String(t) => json!(one(t)),
        serde_json::Value::Array(list) if list.len() <= 100_000 => {
            let mut out = Vec::with_capacity(list.len());
            for (i, t) in list.iter().enumerate() {
                let Some(t) = t.as_str() else {
                    return ApiError::invalid_param(
                        "content",
                        format!("content[{i}] is not a string"),
                    )
                    .into_response();
                };
                out.push(one(t));
            }
            json!(out)
        }
        _ => {
            return ApiError::invalid_param(
                "content",
                "`content` must be a string or a list of at most 100000 strings",
            )
            .into_response();
        }
    };
    let mut answer = json!({"tokens": tokens});
    if let Some(e) = &st.embed {
        answer["max_tokens"] = json!(e.info.max_tokens);
    }
    axum::Json(answer).into_response()
}

async fn embeddings(State(st): State<Arc<EngineState>>, body: Bytes) -> Response {
    match embed_request(st, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn embed_request(st: Arc<EngineState>, body: &[u8]) -> Result<Response, ApiError> {
    let req = aula_protocol::parse_embeddings(body)?;
    if req.model != st.name {
        return Err(ApiError::ModelNotFound(format!(
            "the model `{}` does not exist; this engine serves: {}",
            req.model, st.name
        )));
    }
    let Some(e) = &st.embed else {
        return Err(ApiError::invalid_param(
            "model",
            format!(
                "`{}` is a chat model: it answers /v1/chat/completions and /v1/completions, not /v1/embeddings",
                st.name
            ),
        ));
    };
    if let Some(d) = req.dimensions
        && d as usize != e.info.dimensions
    {
        return Err(ApiError::invalid_param(
            "dimensions",
            format!(
                "`{}` makes vectors of {} dimensions and cannot shorten them; \
                 leave out `dimensions` or set it to {}",
                st.name, e.info.dimensions, e.info.dimensions
            ),
        ));
    }
    let limit = e.info.max_tokens;
    let cut = match req.truncate {
        aula_protocol::Truncate::Refuse => None,
        aula_protocol::Truncate::ModelLimit => Some(limit),
        aula_protocol::Truncate::Tokens(n) => Some((n as usize).clamp(2, limit)),
    };
    let vocab = st.model.vocab();
    let mut inputs = Vec::with_capacity(req.inputs.len());
    let mut prompt_tokens = 0u64;
    for (i, input) in req.inputs.iter().enumerate() {
        let text = match input {
            aula_protocol::EmbedInput::Text(t) => std::borrow::Cow::Borrowed(t.as_str()),
            aula_protocol::EmbedInput::Tokens(ids) => std::borrow::Cow::Owned(
                crate::cl100k::decode(ids)
                    .map_err(|m| ApiError::invalid_param("input", format!("input {i}: {m}")))?,
            ),
        };
        // Special tokens in user text are text, not control tokens.
        let mut tokens = vocab.tokenize(text.as_bytes(), true, false);
        if tokens.is_empty() {
            return Err(ApiError::invalid_param(
                "input",
                format!("input {i} is empty after tokenization"),
            ));
        }
        match cut {
            Some(n) if tokens.len() > n => {
                // Keep the closing separator the model expects.
                let last = tokens[tokens.len() - 1];
                tokens.truncate(n - 1);
                tokens.push(last);
            }
            None if tokens.len() > limit => {
                return Err(ApiError::context_exceeded(format!(
                    "input {i} is {} tokens; `{}` takes at most {limit} tokens per input. \
                     Shorten it, or set \"truncate_prompt_tokens\": -1 to cut it to {limit}.",
                    tokens.len(),
                    st.name
                )));
            }
            _ => {}
        }
        prompt_tokens += tokens.len() as u64;
        inputs.push(tokens);
    }
    let n = inputs.len();
    let queued = e.stats.pending_inputs.fetch_add(n, Ordering::Relaxed);
    // The queue bound counts inputs: a full batch per allowed waiting request.
    let cap = st
        .max_queue
        .saturating_mul(st.parallel)
        .max(crate::embed::MIN_QUEUED_INPUTS);
    if queued + n > cap && queued > 0 {
        e.stats.pending_inputs.fetch_sub(n, Ordering::Relaxed);
        return Err(ApiError::Overloaded(format!(
            "{queued} inputs are already waiting to be embedded; try again shortly"
        )));
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    if e.jobs
        .send(crate::embed::EmbedJob { inputs, reply: tx })
        .is_err()
    {
        e.stats.pending_inputs.fetch_sub(n, Ordering::Relaxed);
        return Err(ApiError::Unavailable("the engine is shutting down".into()));
    }
    let vectors = rx
        .await
        .map_err(|_| ApiError::Internal("the embedding loop stopped".into()))?
        .map_err(ApiError::Internal)?;
    Ok(axum::Json(aula_protocol::embeddings_response(
        &st.name,
        vectors,
        req.base64,
        prompt_tokens,
    ))
    .into_response())
}

/// Compile a grammar for one sequence; what llguidance cannot express is a
/// 400 on `param`, with its reason.
fn compile(st: &EngineState, g: &Grammar, param: &str) -> Result<llguidance::Matcher, ApiError> {
    use crate::constraint::ConstraintError;
    st.constraints.matcher(g).map_err(|e| match e {
        ConstraintError::Grammar(e) => ApiError::invalid_param(
            param,
            format!("this JSON schema cannot be used to constrain the output: {e}"),
        ),
        ConstraintError::Index(e) => {
            ApiError::Internal(format!("constrained decoding is unavailable: {e}"))
        }
    })
}
