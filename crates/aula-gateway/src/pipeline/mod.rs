//! One API call through the gateway: authenticate -> read the body (only
//! now: bounded in size and time) -> read what admission
//! needs -> limits and quotas (reserve tokens) -> the model's fair queue
//! (wait for a slot) -> ledger row -> engine -> watch the answer go by for
//! usage and time to first token -> settle (reconcile the reservation, charge
//! the fair-queue counter, free the slot, finalize the ledger row).
//!
//! A client that leaves at any point drops the request's [`InFlight`], which
//! settles it as `cancelled`. The end of a stream (`data: [DONE]`) and the
//! body of a non-streamed answer are released only after the ledger row is
//! committed, so an answer a client has is never missing from the ledger.
//!
//! What a request is charged (quotas and the ledger): the prompt and
//! completion tokens the engine reports. A request that reached an engine
//! and did not fail there, but whose prompt the engine never reported (the
//! client left before the usage arrived), is charged its prompt bound, the
//! estimate its reservation was made with, plus the completion it received:
//! leaving early does not make prompt processing free.
//!
//! `max_tokens` above the model's context (where Aula started the engine
//! and so knows it) is refused (400) before anything is reserved.

mod calls;
mod gateway;
mod settle;
mod stream;

pub use calls::ChatEvents;
pub use gateway::{Gateway, Reload};

use crate::identity::Identity;
use aula_protocol::{Admission, ApiError};
use aula_store::{Outcome, RequestRecord, now_ms};
use axum::body::Body;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use settle::InFlight;
use std::sync::Arc;
use std::time::Instant;

pub async fn handle(
    st: Arc<Gateway>,
    path: &'static str,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match run(st, path, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The stages of one call, in order; each stage is a function below.
async fn run(
    st: Arc<Gateway>,
    path: &'static str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let id = st
        .auth
        .authenticate(headers)
        .await
        .inspect_err(crate::metrics::auth_refused)?;
    st.scheduling.check()?;
    let body = crate::body::read_json(body).await?;
    call(st, path, &id, Sent::Read(body), arrived).await
}

/// What a call carries: a client's body as it was read, or a request the
/// gateway made itself (typed, see `calls.rs`), already an object: it is
/// validated as one and written out once, for the engine.
pub(crate) enum Sent {
    Read(Bytes),
    Made(serde_json::Map<String, Value>),
}

/// A call made for `id` with a body already read: by a client's request,
/// or by the gateway itself on a user's behalf (a vector store's
/// embeddings, the chat behind `/v1/responses`), which then passes the
/// same limits, queue and ledger as the user's own calls.
pub(crate) async fn call(
    st: Arc<Gateway>,
    path: &'static str,
    id: &Identity,
    body: Sent,
    arrived: Instant,
) -> Result<Response, ApiError> {
    let (call, reservation) = admit(&st, path, id, body).await?;
    let mut fl = InFlight::new(&st, &call, reservation, arrived);
    acquire_slot(&st, &mut fl, &call, &id.name).await?;
    record(&st, &mut fl, id).await?;
    let resp = forward(&mut fl, &call, path).await?;
    if call.adm.stream && resp.status().is_success() {
        Ok(stream::respond(fl, resp, !call.adm.include_usage))
    } else {
        respond_whole(fl, resp, &call.adm.model).await
    }
}

/// A call admitted by the limits: what it asked, where it goes, its weight
/// in the fair queue, and the body the engine is sent.
pub(crate) struct Admitted {
    pub(crate) adm: Admission,
    pub(crate) route: crate::router::Route,
    pub(crate) weight: f64,
    pub(crate) body: Bytes,
    /// The name the ledger records: the model asked for (a fine-tuned
    /// model's own name), where limits, the queue and metrics use its base.
    pub(crate) recorded_as: String,
}

/// Parse and validate the body once (one validation for every engine kind:
/// what Aula's own engine would refuse — `n` > 1, `best_of`, token-id
/// prompts, unknown fields — is refused here), find the model, check
/// `max_tokens` against its context, pass the limits (reserving tokens),
/// and rewrite the body for the engine.
async fn admit(
    st: &Gateway,
    path: &'static str,
    id: &Identity,
    body: Sent,
) -> Result<(Admitted, crate::limits::Reservation), ApiError> {
    // Embeddings generate nothing: no completion budget, no max_tokens or
    // stream options added on the way. Nor does `/tokenize`, which only the
    // gateway itself calls (a vector store's ingestion, as the file's
    // owner): its bound is its text's bytes.
    let embeddings = matches!(path, "/v1/embeddings" | "/tokenize");
    let (read, (mut adm, mut obj)) = match body {
        Sent::Read(b) => {
            let peeked = aula_protocol::peek_admission(&b)?;
            (Some(b), peeked)
        }
        Sent::Made(o) => (None, (aula_protocol::admission_of(&o)?, o)),
    };
    validate(path, &mut adm, &obj, embeddings)?;
    let (route, tuned) = find_route(st, &adm.model, id, embeddings)?;
    check_max_tokens(&adm, route.context)?;
    // Aliases and renamed `url` models: the engine gets the name it knows;
    // limits, the ledger and metrics use the configured name.
    let mut rewritten = false;
    if adm.model != route.upstream_model {
        obj.insert("model".into(), json!(route.upstream_model));
        rewritten = true;
    }
    let recorded_as = tuned.unwrap_or_else(|| route.name.clone());
    adm.model = route.name.clone();
    let resv = st
        .limiter
        .admit_call(
            id,
            &adm.model,
            adm.prompt_tokens_bound,
            adm.max_tokens,
            now_ms(),
        )
        .await
        .inspect_err(|e| {
            crate::metrics::limit_refused(e);
            st.live.refused(e);
        })?;
    // Whose request this is, and how many the user has for this model
    // (this one included), for an engine that pauses over-share users.
    let user = route
        .preempt
        .then(|| (engine_user(&id.name), route.queue.held(&id.name) + 1));
    let body = match (embeddings, rewritten, read) {
        (false, _, read) => for_the_engine(&adm, &resv, obj, rewritten, read, user)?,
        (true, false, Some(read)) => read,
        (true, _, _) => to_bytes(obj)?,
    };
    let weight = resv.weight;
    Ok((
        Admitted {
            adm,
            route,
            weight,
            body,
            recorded_as,
        },
        resv,
    ))
}

/// The object, read once, checked as its endpoint's request; what
/// admission needs of it completed.
fn validate(
    path: &'static str,
    adm: &mut Admission,
    obj: &serde_json::Map<String, Value>,
    embeddings: bool,
) -> Result<(), ApiError> {
    match path {
        "/v1/embeddings" => drop(aula_protocol::parse_embeddings_object(obj)?),
        "/v1/chat/completions" => drop(aula_protocol::parse_chat_object(obj)?),
        "/v1/completions" => drop(aula_protocol::parse_completion_object(obj)?),
        "/tokenize" => {
            adm.prompt_tokens_bound = match obj.get("content") {
                Some(Value::String(t)) => t.len() as u64 + 2,
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|t| t.as_str().map_or(0, str::len) as u64 + 2)
                    .sum(),
                _ => 0,
            };
        }
        _ => {}
    }
    if embeddings {
        adm.max_tokens = Some(0);
        adm.stream = false;
    }
    Ok(())
}

/// Where `model` goes for `id`, and the fine-tuned model's own name when it
/// is one. A fine-tuned model runs on its base's engine, which knows it by
/// its name (an adapter); limits, the queue and metrics count the base, the
/// ledger the fine-tuned model. An unknown model's error lists only the
/// models this user may use.
fn find_route(
    st: &Gateway,
    model: &str,
    id: &Identity,
    embeddings: bool,
) -> Result<(crate::router::Route, Option<String>), ApiError> {
    if let Ok(r) = st.router.get(model) {
        return Ok((r.clone(), None));
    }
    match st.tuned.model_for(model, id) {
        Some(t) if !embeddings => {
            let mut r = st.router.get(&t.base)?.clone();
            r.upstream_model = model.to_string();
            Ok((r, Some(model.to_string())))
        }
        _ => {
            let mut names = st.visible_models(id);
            names.extend(st.tuned.models_for(id).into_iter().map(|(n, _)| n));
            Err(ApiError::ModelNotFound(format!(
                "the model `{model}` does not exist; models you may use: {}",
                names.join(", ")
            )))
        }
    }
}

/// Whose request it is, as an engine that pauses over-share users is told
/// (OpenAI's `user`): the same for a user's every request while this
/// gateway runs, and not their name.
fn engine_user(name: &str) -> String {
    use std::hash::BuildHasher;
    static SALT: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    format!(
        "u{:016x}",
        SALT.get_or_init(Default::default).hash_one(name)
    )
}

/// What a generating call's engine is sent: the ceiling when the request
/// set no max_tokens, the usage chunk of a stream (removed again on the
/// way back when the client did not ask for it), and, for an engine that
/// pauses over-share users, whose request it is (in place of any `user`
/// the client set) and the user's backlog here (`aula_backlog`, which
/// clients may not set). A client's body as it came when nothing changed.
fn for_the_engine(
    adm: &Admission,
    resv: &crate::limits::Reservation,
    mut obj: serde_json::Map<String, Value>,
    mut rewritten: bool,
    read: Option<Bytes>,
    user: Option<(String, usize)>,
) -> Result<Bytes, ApiError> {
    // Only the gateway says what a user's backlog is.
    if obj.remove(aula_protocol::BACKLOG_FIELD).is_some() {
        rewritten = true;
    }
    if let Some((u, backlog)) = user {
        obj.insert("user".into(), json!(u));
        obj.insert(aula_protocol::BACKLOG_FIELD.into(), json!(backlog));
        rewritten = true;
    }
    if adm.max_tokens.is_none()
        && let Some(m) = resv.max_tokens
    {
        obj.insert("max_tokens".into(), json!(m));
        rewritten = true;
    }
    if adm.stream && !adm.include_usage {
        obj.insert("stream_options".into(), json!({"include_usage": true}));
        rewritten = true;
    }
    match read {
        Some(body) if !rewritten => Ok(body),
        _ => to_bytes(obj),
    }
}

fn to_bytes(obj: serde_json::Map<String, Value>) -> Result<Bytes, ApiError> {
    serde_json::to_vec(&Value::Object(obj))
        .map(Bytes::from)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// Load the model if it is not loaded, wait in its fair queue for a slot,
/// and make sure its engine is still up (an engine restarting after a
/// crash: queued requests wait for it).
async fn acquire_slot(
    st: &Gateway,
    fl: &mut InFlight,
    call: &Admitted,
    user: &str,
) -> Result<(), ApiError> {
    if let Err(e) = st.fleet.ensure_loaded(&call.adm.model).await {
        return Err(fl.fail(e).await);
    }
    let ticket = match call
        .route
        .queue
        .enqueue(user, call.weight, call.adm.prompt_tokens_bound)
    {
        Ok(t) => t,
        Err(full) => {
            let e = ApiError::from(full);
            crate::metrics::limit_refused(&e);
            st.live.refused(&e);
            return Err(fl.fail(e).await);
        }
    };
    crate::metrics::queue_gauges(&fl.model, &fl.queue.stats());
    let Some(permit) = ticket.ready().await else {
        return Err(fl
            .fail(ApiError::Internal("the queue was closed".into()))
            .await);
    };
    fl.permit = Some(permit);
    if let Err(e) = st.fleet.ensure_loaded(&call.adm.model).await {
        return Err(fl.fail(e).await);
    }
    fl.queue_ms = fl.arrived.elapsed().as_secs_f64() * 1000.0;
    crate::metrics::queue_gauges(&fl.model, &fl.queue.stats());
    crate::metrics::queue_wait(&fl.model, fl.queue_ms / 1000.0);
    Ok(())
}

/// The ledger row, in the next commit (`Ledger::begin`: the request waits
/// for it only when the ledger is failing or stuck, and is then refused
/// before it runs).
async fn record(st: &Gateway, fl: &mut InFlight, id: &Identity) -> Result<(), ApiError> {
    let record = RequestRecord {
        id: aula_store::new_request_id(),
        user: id.name.clone(),
        groups: id.groups.clone(),
        model: fl.recorded_as.clone(),
        admitted_ms: now_ms(),
    };
    if let Err(e) = st.ledger.begin(record.clone()).await {
        return Err(fl
            .fail(ApiError::StateUnavailable(format!(
                "{e}; the request was not run"
            )))
            .await);
    }
    fl.record = Some(record);
    Ok(())
}

/// Send the call to the engine; the answer's headers, its body still coming.
async fn forward(
    fl: &mut InFlight,
    call: &Admitted,
    path: &'static str,
) -> Result<Response<Body>, ApiError> {
    // From here the engine may be working on the prompt, also if the
    // client leaves before the answer starts.
    fl.reached_engine = true;
    let resp = match call.route.backend.forward(path, call.body.clone()).await {
        Ok(r) => r,
        // The engine had the request all that time: charged like a client
        // that left (its prompt bound), not free.
        Err(e @ ApiError::EngineTimeout(_)) => {
            let _ = fl.complete(Outcome::Timeout).await;
            return Err(e);
        }
        Err(e) => {
            fl.reached_engine = false;
            return Err(fl.fail(e).await);
        }
    };
    let (mut parts, body) = resp.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::TRANSFER_ENCODING);
    if let Some(rec) = fl.record.as_ref()
        && let Ok(v) = header::HeaderValue::from_str(&rec.id)
    {
        // The ledger row of this request, for support questions.
        parts.headers.insert("x-aula-request-id", v);
    }
    Ok(Response::from_parts(parts, body))
}

/// A whole (not streamed) answer, or an engine's error: read it, settle the
/// request with the usage it reports, and only then hand it to the client.
async fn respond_whole(
    mut fl: InFlight,
    resp: Response<Body>,
    model: &str,
) -> Result<Response, ApiError> {
    let (parts, upstream) = resp.into_parts();
    let bytes = match upstream.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Err(fl
                .fail(ApiError::BadGateway(format!(
                    "the engine for model `{model}` failed while answering: {e}"
                )))
                .await);
        }
    };
    let status = if parts.status.is_success() {
        if let Ok(r) = serde_json::from_slice::<Reported>(&bytes) {
            let usage = r.usage.unwrap_or_default();
            fl.prompt_tokens = usage.prompt_tokens;
            fl.completion_tokens = usage.completion_tokens;
            // `/tokenize` reports no usage: the tokens it answered are it.
            if fl.prompt_tokens.is_none()
                && let Some(lists) = r.tokens
            {
                fl.prompt_tokens = Some(lists.iter().map(TokenList::len).sum());
            }
        }
        fl.ttft = Some(fl.arrived.elapsed());
        Outcome::Ok
    } else {
        Outcome::Error(parts.status.as_u16())
    };
    if let Err(e) = fl.complete(status).await
        && status == Outcome::Ok
    {
        return Err(ApiError::StateUnavailable(format!(
            "{e}; the answer could not be recorded, so it is not sent"
        )));
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// What the gateway reads of a whole answer (everything else is skipped,
/// not built into a tree): its usage, or `/tokenize`'s token lists.
#[derive(serde::Deserialize)]
struct Reported {
    usage: Option<ReportedUsage>,
    tokens: Option<Vec<TokenList>>,
}

#[derive(serde::Deserialize, Default)]
struct ReportedUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

/// One prompt's tokens in a `/tokenize` answer (a list), or one token.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum TokenList {
    List(Vec<serde::de::IgnoredAny>),
    One(serde::de::IgnoredAny),
}

impl TokenList {
    fn len(&self) -> u64 {
        match self {
            TokenList::List(l) => l.len() as u64,
            TokenList::One(_) => 1,
        }
    }
}

/// Refuse a `max_tokens` larger than the model's context (when known):
/// no engine could produce it, and it would reserve a budget for nothing.
fn check_max_tokens(adm: &Admission, context: Option<u32>) -> Result<(), ApiError> {
    match (adm.max_tokens, context) {
        (Some(m), Some(c)) if m > u64::from(c) => Err(ApiError::invalid_param(
            adm.max_tokens_field,
            format!(
                "`{}` is {m}, more than the context of the model `{}`: {c} tokens per request",
                adm.max_tokens_field, adm.model
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the way to an engine that pauses users, `user` and the backlog
    /// are the gateway's, whatever the client sent; elsewhere the client's
    /// backlog field is dropped and its `user` kept.
    #[test]
    fn the_engine_is_told_whose_request_it_is_and_clients_cannot_say() {
        let sent = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":4,"user":"someone-else","aula_backlog":1}"#;
        let (adm, obj) = aula_protocol::peek_admission(sent).unwrap();
        let resv = crate::limits::Reservation {
            user: "ada".into(),
            id: 0,
            tokens: 0,
            admitted_ms: 0,
            max_tokens: None,
            weight: 1.0,
            shared: None,
        };
        let body = |user| {
            let b = for_the_engine(
                &adm,
                &resv,
                obj.clone(),
                false,
                Some(sent.as_slice().into()),
                user,
            )
            .unwrap();
            serde_json::from_slice::<Value>(&b).unwrap()
        };
        let id = engine_user("ada");
        assert_eq!(id, engine_user("ada"), "the same user, the same id");
        assert_ne!(id, engine_user("bob"));
        assert!(!id.contains("ada"));
        let told = body(Some((id.clone(), 7)));
        assert_eq!(told["user"], json!(id));
        assert_eq!(told["aula_backlog"], 7);
        let other = body(None);
        assert_eq!(other["user"], "someone-else");
        assert!(other.get("aula_backlog").is_none(), "{other}");
    }

    #[test]
    fn usage_is_read_without_building_the_answer() {
        let read = |s: &str| serde_json::from_str::<Reported>(s).unwrap();
        let r = read(
            r#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}"#,
        );
        let u = r.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (Some(7), Some(3)));
        assert!(read(r#"{"usage":null}"#).usage.is_none());
        // `/tokenize`: one list per prompt, or bare tokens.
        let t = read(r#"{"tokens":[[1,2,3],[4]]}"#).tokens.unwrap();
        assert_eq!(t.iter().map(TokenList::len).sum::<u64>(), 4);
        let t = read(r#"{"tokens":[5,6]}"#).tokens.unwrap();
        assert_eq!(t.iter().map(TokenList::len).sum::<u64>(), 2);
    }
    use crate::limits::{LimitFields, LimitRule, Limiter, PriorUsage, Scope};

    #[test]
    fn text_detection() {
        assert!(stream::has_text(
            br#"{"choices":[{"delta":{"content":"Hi"}}]}"#
        ));
        assert!(!stream::has_text(
            br#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#
        ));
        assert!(stream::has_text(
            br#"{"choices":[{"text":" x","index":0}]}"#
        ));
        assert!(!stream::has_text(
            br#"{"choices":[],"usage":{"prompt_tokens":3}}"#
        ));
    }

    #[test]
    fn max_tokens_above_the_context_are_refused() {
        let (adm, _) = aula_protocol::peek_admission(
            br#"{"model":"m","prompt":"x","max_completion_tokens":5000}"#,
        )
        .unwrap();
        let e = check_max_tokens(&adm, Some(4096)).unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(e.body()["error"]["param"], "max_completion_tokens");
        assert!(check_max_tokens(&adm, Some(5000)).is_ok());
        assert!(check_max_tokens(&adm, None).is_ok());
    }

    /// A gateway with no models, a database in a temporary directory and
    /// a daily token budget of 10,000.
    async fn gateway() -> (Arc<Gateway>, std::path::PathBuf) {
        static DIRS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "aula-pipeline-test-{}-{}",
            std::process::id(),
            DIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let store = aula_store::Store::open_in(&dir).await.unwrap();
        let auth = crate::auth::Authenticator::new(
            store.clone(),
            crate::auth::AuthSettings {
                allow_open: true,
                ..Default::default()
            },
            aula_fleet::backend::http_client(),
        )
        .await
        .unwrap();
        let fleet = aula_fleet::FleetBuilder::new(aula_fleet::Settings {
            exe: std::path::PathBuf::new(),
            logs: dir.clone(),
            budget_bytes: 0,
            load_timeout: std::time::Duration::from_secs(1),
        })
        .start(&aula_fleet::tasks::Tasks::new())
        .unwrap();
        let st = Gateway {
            router: crate::router::ModelRouter::default(),
            auth,
            limiter: Limiter::new(
                vec![LimitRule {
                    scope: Scope::Everyone,
                    fields: LimitFields {
                        tokens_per_day: Some(10_000),
                        ..Default::default()
                    },
                }],
                None,
                PriorUsage::default(),
            ),
            ledger: aula_store::Ledger::start(store.clone()),
            reload: None,
            fleet,
            store,
            live: crate::live::Live::default(),
            tuned: Default::default(),
            closing: Default::default(),
            scheduling: Default::default(),
        };
        (Arc::new(st), dir)
    }

    /// A request of `user` admitted with a prompt bound of 500 and
    /// `max_tokens` 100, which has seen `chunks` chunks of text.
    fn in_flight(st: &Arc<Gateway>, user: &str, reached: bool, chunks: u64) -> InFlight {
        let id = Identity {
            name: user.into(),
            role: aula_store::Role::Student,
            groups: Vec::new(),
            via: crate::identity::Via::Key,
        };
        let resv = st
            .limiter
            .admit(&id, "m", 500, Some(100), now_ms())
            .unwrap();
        InFlight {
            st: st.clone(),
            queue: crate::fair::FairQueue::new(1, crate::fair::FairConfig::default()),
            model: "m".into(),
            recorded_as: "m".into(),
            resv: Some(resv),
            permit: None,
            record: None,
            arrived: Instant::now(),
            queue_ms: 0.0,
            ttft: None,
            prompt_bound: 500,
            reached_engine: reached,
            prompt_tokens: None,
            completion_tokens: None,
            chunks,
            done: false,
            in_use: None,
        }
    }

    /// A client that leaves after two chunks is charged its prompt bound
    /// and the two chunks, not the two chunks alone.
    #[tokio::test]
    async fn a_client_that_leaves_is_charged_its_prompt() {
        let (st, dir) = gateway().await;
        let used_today = |user: &str| st.limiter.usage_of(user).unwrap()[0];

        drop(in_flight(&st, "gone", true, 2));
        assert_eq!(used_today("gone"), (502, 0));

        // The engine reported the prompt before the client left: that counts.
        let mut fl = in_flight(&st, "reported", true, 2);
        fl.prompt_tokens = Some(40);
        drop(fl);
        assert_eq!(used_today("reported"), (42, 0));

        // Left while waiting in the queue: the engine never saw it.
        drop(in_flight(&st, "queued", false, 0));
        assert_eq!(used_today("queued"), (0, 0));

        // The engine failed: the user is not charged for the prompt.
        let mut fl = in_flight(&st, "failed", true, 3);
        let finish = fl.settle(Outcome::Error(502));
        assert!(finish.is_none());
        drop(fl);
        assert_eq!(used_today("failed"), (3, 0));
        let _ = std::fs::remove_dir_all(dir);
    }
}
