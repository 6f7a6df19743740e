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
mod stream;
use stream::*;
mod embeddings;
use embeddings::*;

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
    /// Whether the scheduler pauses over-share users' sequences.
    pub preempt: bool,
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
        // Elastic admission (scheduler docs): sequences paused for another
        // user's request, now and since start.
        "pausing": {
            "on": st.preempt,
            "paused": st.stats.paused.load(Ordering::Relaxed),
            "pauses": st.stats.pauses.load(Ordering::Relaxed),
            "resumes": st.stats.resumes.load(Ordering::Relaxed),
            // Time the context waited while paused KV was copied out and in.
            "copy_ms": st.stats.pause_copy_us.load(Ordering::Relaxed) / 1000,
        },
        // Decode steps since start: how many, the tokens they fed, the
        // sequences they sampled, and the time in llama.cpp's decode.
        "steps": {
            "count": st.stats.steps.load(Ordering::Relaxed),
            "tokens": st.stats.step_tokens.load(Ordering::Relaxed),
            "sampled": st.stats.step_samples.load(Ordering::Relaxed),
            "decode_ms": st.stats.decode_us.load(Ordering::Relaxed) / 1000,
        },
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
        user: req.user.clone(),
        backlog: req.backlog.unwrap_or(1) as usize,
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
