//! Parsing and validation of OpenAI chat and text completion requests.
//!
//! Requests are parsed field by field from JSON so that every mistake gets a
//! message naming the field. Fields that would change the result but are not
//! supported (`n` > 1, tools, logprobs, ...) are refused, never ignored, and
//! unknown fields are refused like OpenAI's own API does.

mod admission;
mod format;
mod messages;

pub use admission::{Admission, MAX_STOP_BYTES, MAX_TOKENS_BOUND, admission_of, peek_admission};
use format::parse_response_format;
pub use format::{MAX_SCHEMA_BYTES, ResponseFormat, check_schema_bounds};
use messages::parse_messages;
pub use messages::plain as plain_messages;

use crate::ApiError;
use serde::Serialize;
use serde_json::{Map, Value};

/// One turn of a conversation, as chat templates read it (Hugging Face's
/// convention): `role`, `content`, an assistant's `tool_calls` (`{"id",
/// "type": "function", "function": {"name", "arguments": {...}}}`, the
/// arguments parsed) and a tool result's `tool_call_id` and `name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    /// A plain text turn.
    pub fn text(role: &str, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Chat(Vec<ChatMessage>),
    Text(String),
}

/// How to sample. Defaults follow OpenAI's (temperature 1, top_p 1).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub max_tokens: Option<u32>,
    pub temperature: f32,
    pub top_p: f32,
    /// 0 disables top-k.
    pub top_k: u32,
    pub seed: Option<u32>,
    pub stop: Vec<String>,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_tokens: None,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            seed: None,
            stop: Vec::new(),
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    pub model: String,
    pub prompt: Prompt,
    pub params: SamplingParams,
    pub stream: bool,
    pub include_usage: bool,
    pub response_format: ResponseFormat,
    /// Tools offered (chat only); at most one call per answer.
    pub tools: Option<crate::tools::ToolSpec>,
    /// OpenAI's `user`: whose request it is. The gateway sets it, on the way
    /// to Aula's own engine, to an opaque id of the signed-in user, which
    /// the engine's pausing rules read.
    pub user: Option<String>,
    /// [`BACKLOG_FIELD`]: the user's requests for this model in the gateway.
    pub backlog: Option<u32>,
}

/// Aula's own field, set by the gateway on the way to Aula's engine (and
/// removed from what clients send): how many requests this request's user
/// has for this model in the gateway, running or waiting, itself included.
pub const BACKLOG_FIELD: &str = "aula_backlog";

const COMMON_FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "stream",
    "stream_options",
    "n",
    "user",
    BACKLOG_FIELD,
    "logit_bias",
    "logprobs",
    "top_logprobs",
];
const CHAT_FIELDS: &[&str] = &[
    "messages",
    "max_completion_tokens",
    "metadata",
    "store",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "service_tier",
];
const COMPLETION_FIELDS: &[&str] = &["prompt", "echo", "suffix", "best_of", "response_format"];

/// Parse the body of `POST /v1/chat/completions`.
pub fn parse_chat(body: &[u8]) -> Result<GenerateRequest, ApiError> {
    parse_chat_object(&parse_object(body)?)
}

/// [`parse_chat`] on a body already parsed (the gateway's, from [`peek_admission`]).
pub fn parse_chat_object(obj: &Map<String, Value>) -> Result<GenerateRequest, ApiError> {
    check_fields(obj, CHAT_FIELDS)?;
    let messages = parse_messages(obj.get("messages"))?;
    let mut req = parse_common(obj, Prompt::Chat(messages))?;
    if let Some(v) = opt(obj, "max_completion_tokens") {
        let n = parse_u32(v, "max_completion_tokens")?;
        if req.params.max_tokens.is_some_and(|m| m != n) {
            return Err(ApiError::invalid_param(
                "max_completion_tokens",
                "max_tokens and max_completion_tokens disagree; give one of them",
            ));
        }
        req.params.max_tokens = Some(n);
    }
    if let Some(rf) = opt(obj, "response_format") {
        req.response_format = parse_response_format(rf)?;
    }
    req.tools = crate::tools::parse_tools(obj)?;
    if req.tools.as_ref().is_some_and(|t| t.active()) && req.response_format != ResponseFormat::Text
    {
        return Err(ApiError::invalid_param(
            "response_format",
            "`response_format` and `tools` cannot be combined; give the tool's arguments a schema instead",
        ));
    }
    match opt(obj, "parallel_tool_calls") {
        None | Some(Value::Bool(_)) => {}
        Some(_) => {
            return Err(ApiError::invalid_param(
                "parallel_tool_calls",
                "`parallel_tool_calls` must be a boolean",
            ));
        }
    }
    if let Some(store) = opt(obj, "store")
        && store.as_bool() == Some(true)
    {
        return Err(ApiError::invalid_param(
            "store",
            "store=true is not supported",
        ));
    }
    Ok(req)
}

/// Parse the body of `POST /v1/completions`.
pub fn parse_completion(body: &[u8]) -> Result<GenerateRequest, ApiError> {
    parse_completion_object(&parse_object(body)?)
}

/// [`parse_completion`] on a body already parsed.
pub fn parse_completion_object(obj: &Map<String, Value>) -> Result<GenerateRequest, ApiError> {
    check_fields(obj, COMPLETION_FIELDS)?;
    let prompt = match obj.get("prompt") {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid_param("prompt", "`prompt` is required"));
        }
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::String(s)] => s.clone(),
            _ => {
                return Err(ApiError::invalid_param(
                    "prompt",
                    "`prompt` must be a string (a list is accepted only with exactly one string)",
                ));
            }
        },
        Some(_) => {
            return Err(ApiError::invalid_param(
                "prompt",
                "`prompt` must be a string",
            ));
        }
    };
    if prompt.is_empty() {
        return Err(ApiError::invalid_param(
            "prompt",
            "`prompt` must not be empty",
        ));
    }
    let mut req = parse_common(obj, Prompt::Text(prompt))?;
    if let Some(rf) = opt(obj, "response_format") {
        req.response_format = parse_response_format(rf)?;
    }
    if opt(obj, "echo").is_some_and(|v| v.as_bool() != Some(false)) {
        return Err(ApiError::invalid_param("echo", "echo is not supported"));
    }
    if opt(obj, "suffix").is_some() {
        return Err(ApiError::invalid_param(
            "suffix",
            "suffix (insertion) is not supported",
        ));
    }
    if let Some(v) = opt(obj, "best_of")
        && whole_u64(v) != Some(1)
    {
        return Err(ApiError::invalid_param(
            "best_of",
            "only best_of=1 is supported",
        ));
    }
    Ok(req)
}

/// Parse just enough of a body to route it: the JSON object, its `model` and `stream`.
pub fn peek_route(body: &[u8]) -> Result<(String, bool), ApiError> {
    #[derive(serde::Deserialize)]
    struct Peek {
        model: Option<Value>,
        stream: Option<Value>,
    }
    let peek: Peek = serde_json::from_slice(body).map_err(|e| json_error(&e))?;
    let model = match peek.model {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(ApiError::invalid_param("model", "`model` is required"));
        }
        Some(_) => return Err(ApiError::invalid_param("model", "`model` must be a string")),
    };
    let stream = match peek.stream {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "stream",
                "`stream` must be a boolean",
            ));
        }
    };
    Ok((model, stream))
}

fn json_error(e: &serde_json::Error) -> ApiError {
    if e.is_data() {
        ApiError::invalid("the request body must be a JSON object")
    } else {
        ApiError::invalid(format!("the request body is not valid JSON: {e}"))
    }
}

pub(crate) fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::invalid("the request body must be a JSON object")),
        Err(e) => Err(json_error(&e)),
    }
}

fn check_fields(obj: &Map<String, Value>, extra: &[&str]) -> Result<(), ApiError> {
    for key in obj.keys() {
        if !COMMON_FIELDS.contains(&key.as_str()) && !extra.contains(&key.as_str()) {
            return Err(ApiError::invalid_param(
                key,
                format!("unrecognized request argument supplied: {key}"),
            ));
        }
    }
    Ok(())
}

/// A JSON number that is a whole number, as u64: `5` and `5.0` alike (JSON
/// does not tell them apart; Python clients send floats such as `256.0`).
pub(crate) fn whole_u64(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|x| x.fract() == 0.0 && *x >= 0.0 && *x < 18_446_744_073_709_551_616.0)
            .map(|x| x as u64)
    })
}

/// [`whole_u64`] for signed values.
pub(crate) fn whole_i64(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|x| {
                x.fract() == 0.0
                    && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(x)
            })
            .map(|x| x as i64)
    })
}

/// A field that is present and not null.
fn opt<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn parse_u32(v: &Value, name: &str) -> Result<u32, ApiError> {
    let n = whole_u64(v).ok_or_else(|| {
        ApiError::invalid_param(name, format!("`{name}` must be a positive integer"))
    })?;
    if n == 0 {
        return Err(ApiError::invalid_param(
            name,
            format!("`{name}` must be at least 1"),
        ));
    }
    u32::try_from(n)
        .map_err(|_| ApiError::invalid_param(name, format!("`{name}` is too large: {n}")))
}

fn parse_f32(v: &Value, name: &str, min: f32, max: f32) -> Result<f32, ApiError> {
    let x = v
        .as_f64()
        .ok_or_else(|| ApiError::invalid_param(name, format!("`{name}` must be a number")))?;
    if !(f64::from(min)..=f64::from(max)).contains(&x) {
        return Err(ApiError::invalid_param(
            name,
            format!("`{name}` must be between {min} and {max}, got {x}"),
        ));
    }
    Ok(x as f32)
}

fn parse_common(obj: &Map<String, Value>, prompt: Prompt) -> Result<GenerateRequest, ApiError> {
    let model = parse_model(obj)?;
    let params = parse_sampling(obj)?;
    let (stream, include_usage) = parse_stream(obj)?;
    refuse_unsupported(obj)?;
    Ok(GenerateRequest {
        model,
        prompt,
        params,
        stream,
        include_usage,
        response_format: ResponseFormat::Text,
        tools: None,
        user: opt(obj, "user").and_then(Value::as_str).map(str::to_string),
        backlog: opt(obj, BACKLOG_FIELD)
            .map(|v| parse_u32(v, BACKLOG_FIELD))
            .transpose()?,
    })
}

/// `model`: a non-empty string.
fn parse_model(obj: &Map<String, Value>) -> Result<String, ApiError> {
    match obj.get("model") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(ApiError::invalid_param("model", "`model` is required"))
        }
        Some(_) => Err(ApiError::invalid_param("model", "`model` must be a string")),
    }
}

/// The sampling parameters, each within OpenAI's range.
fn parse_sampling(obj: &Map<String, Value>) -> Result<SamplingParams, ApiError> {
    let mut p = SamplingParams::default();
    if let Some(v) = opt(obj, "max_tokens") {
        p.max_tokens = Some(parse_u32(v, "max_tokens")?);
    }
    if let Some(v) = opt(obj, "temperature") {
        p.temperature = parse_f32(v, "temperature", 0.0, 2.0)?;
    }
    if let Some(v) = opt(obj, "top_p") {
        p.top_p = parse_f32(v, "top_p", 0.0, 1.0)?;
        if v.as_f64().is_some_and(|x| x <= 0.0) {
            return Err(ApiError::invalid_param(
                "top_p",
                "`top_p` must be greater than 0",
            ));
        }
        // A positive value too small for an f32 is still positive.
        p.top_p = p.top_p.max(f32::MIN_POSITIVE);
    }
    if let Some(v) = opt(obj, "top_k") {
        let k = whole_u64(v).ok_or_else(|| {
            ApiError::invalid_param("top_k", "`top_k` must be a non-negative integer")
        })?;
        p.top_k = u32::try_from(k)
            .map_err(|_| ApiError::invalid_param("top_k", "`top_k` is too large"))?;
    }
    if let Some(v) = opt(obj, "seed") {
        let s = whole_i64(v)
            .ok_or_else(|| ApiError::invalid_param("seed", "`seed` must be an integer"))?;
        // Any 64-bit seed is accepted; llama.cpp takes 32 bits, so fold it.
        p.seed = Some((s as u64 ^ ((s as u64) >> 32)) as u32);
    }
    p.stop = parse_stop(obj)?;
    if let Some(v) = opt(obj, "presence_penalty") {
        p.presence_penalty = parse_f32(v, "presence_penalty", -2.0, 2.0)?;
    }
    if let Some(v) = opt(obj, "frequency_penalty") {
        p.frequency_penalty = parse_f32(v, "frequency_penalty", -2.0, 2.0)?;
    }
    Ok(p)
}

/// `stop`: up to 4 non-empty sequences of at most [`MAX_STOP_BYTES`].
fn parse_stop(obj: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let Some(v) = opt(obj, "stop") else {
        return Ok(Vec::new());
    };
    let stop = match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) => out.push(s.clone()),
                    _ => {
                        return Err(ApiError::invalid_param(
                            "stop",
                            "`stop` must be a string or a list of strings",
                        ));
                    }
                }
            }
            out
        }
        _ => {
            return Err(ApiError::invalid_param(
                "stop",
                "`stop` must be a string or a list of strings",
            ));
        }
    };
    if stop.len() > 4 {
        return Err(ApiError::invalid_param(
            "stop",
            "at most 4 stop sequences are allowed",
        ));
    }
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid_param(
            "stop",
            "stop sequences must not be empty",
        ));
    }
    // Every generated token is checked against every prefix of every
    // stop sequence on the engine's one scheduler thread: bounded.
    if let Some(long) = stop.iter().find(|s| s.len() > MAX_STOP_BYTES) {
        return Err(ApiError::invalid_param(
            "stop",
            format!(
                "a stop sequence may be at most {MAX_STOP_BYTES} bytes; one has {}",
                long.len()
            ),
        ));
    }
    Ok(stop)
}

/// `stream` and `stream_options` (only `include_usage`, only when streaming).
fn parse_stream(obj: &Map<String, Value>) -> Result<(bool, bool), ApiError> {
    let stream = match opt(obj, "stream") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "stream",
                "`stream` must be a boolean",
            ));
        }
    };
    let mut include_usage = false;
    if let Some(so) = opt(obj, "stream_options") {
        let so = so.as_object().ok_or_else(|| {
            ApiError::invalid_param("stream_options", "`stream_options` must be an object")
        })?;
        if !stream {
            return Err(ApiError::invalid_param(
                "stream_options",
                "`stream_options` is only allowed with stream=true",
            ));
        }
        for (k, v) in so {
            match (k.as_str(), v) {
                ("include_usage", Value::Bool(b)) => include_usage = *b,
                ("include_usage", _) => {
                    return Err(ApiError::invalid_param(
                        "stream_options",
                        "`include_usage` must be a boolean",
                    ));
                }
                _ => {
                    return Err(ApiError::invalid_param(
                        "stream_options",
                        format!("unsupported stream option: {k}"),
                    ));
                }
            }
        }
    }
    Ok((stream, include_usage))
}

/// What would change the answer but is not supported: refused, never ignored.
fn refuse_unsupported(obj: &Map<String, Value>) -> Result<(), ApiError> {
    if let Some(n) = opt(obj, "n")
        && whole_u64(n) != Some(1)
    {
        return Err(ApiError::invalid_param(
            "n",
            "only n=1 is supported: send one request per completion",
        ));
    }
    if let Some(lb) = opt(obj, "logit_bias")
        && !lb.as_object().is_some_and(Map::is_empty)
    {
        return Err(ApiError::invalid_param(
            "logit_bias",
            "logit_bias is not supported",
        ));
    }
    if opt(obj, "logprobs").is_some_and(|v| v.as_bool() != Some(false))
        || opt(obj, "top_logprobs").is_some()
    {
        return Err(ApiError::invalid_param(
            "logprobs",
            "logprobs are not supported",
        ));
    }
    if let Some(u) = opt(obj, "user")
        && !u.is_string()
    {
        return Err(ApiError::invalid_param("user", "`user` must be a string"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        match parse_chat(body.as_bytes()) {
            Ok(r) => format!("unexpected ok: {r:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_a_full_chat_request() {
        let r = parse_chat(br#"{"model":"m","messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"hi"}]}],
            "max_tokens":5,"temperature":0,"top_p":0.5,"top_k":3,"seed":7,"stop":["a","b"],"presence_penalty":0.5,"frequency_penalty":-1,
            "stream":true,"stream_options":{"include_usage":true},"n":1,"user":"u"}"#)
        .map_err(|e| e.to_string());
        let r = match r {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(r.model, "m");
        assert_eq!(r.params.max_tokens, Some(5));
        assert_eq!(r.params.temperature, 0.0);
        assert_eq!(r.params.top_k, 3);
        assert_eq!(r.params.seed, Some(7));
        assert_eq!(r.params.stop, vec!["a", "b"]);
        assert!(r.stream && r.include_usage);
        assert_eq!(
            r.prompt,
            Prompt::Chat(vec![
                ChatMessage::text("system", "s"),
                ChatMessage::text("user", "hi")
            ])
        );
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        assert!(err(r#"{"model":"m","messages":[]}"#).contains("at least one message"));
        assert!(err(r#"{"model":"m"}"#).contains("`messages` is required"));
        assert!(
            err(r#"{"messages":[{"role":"user","content":"x"}]}"#).contains("`model` is required")
        );
        assert!(
            err(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":2}"#)
                .contains("n=1")
        );
        assert!(
            err(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":"5"}"#)
                .contains("positive integer")
        );
        assert!(err(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":99999999999}"#).contains("too large"));
        assert!(
            err(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":3}"#)
                .contains("between 0 and 2")
        );
        assert!(
            err(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"frobnicate":1}"#)
                .contains("unrecognized")
        );
        assert!(err(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]}"#).contains("function is required"));
        assert!(
            err(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"logprobs":true}"#)
                .contains("logprobs")
        );
        assert!(
            err(r#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#).contains("wizard")
        );
        assert!(err(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}}"#).contains("stream=true"));
        assert!(
            err(r#"{"model":"m","messages":[{"role":"user"}]}"#).contains("content is required")
        );
        assert!(err(r#"{"model": "m", "messages": [}"#).contains("not valid JSON"));
        assert!(err(r#"[1,2]"#).contains("JSON object"));
        assert!(
            err(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stop":["","a"]}"#)
                .contains("empty")
        );
    }

    /// Found by schemathesis: a positive `top_p` below f32's range was
    /// refused as "must be greater than 0".
    #[test]
    fn a_tiny_positive_top_p_is_positive() {
        let r = parse_chat(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"top_p":5e-324}"#,
        )
        .unwrap();
        assert!(r.params.top_p > 0.0);
        // Whole numbers sent as floats (Python clients do) are integers.
        let r = parse_chat(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5.0,"n":1.0,"seed":-3.0}"#,
        )
        .unwrap();
        assert_eq!(r.params.max_tokens, Some(5));
        assert!(
            err(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5.5}"#)
                .contains("max_tokens")
        );
        assert!(
            err(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"top_p":0}"#)
                .contains("greater than 0")
        );
    }

    #[test]
    fn completion_requests() {
        let r = parse_completion(br#"{"model":"m","prompt":["hello"],"max_tokens":3}"#);
        assert!(
            matches!(r, Ok(GenerateRequest { prompt: Prompt::Text(ref t), .. }) if t == "hello")
        );
        assert!(parse_completion(br#"{"model":"m","prompt":["a","b"]}"#).is_err());
        assert!(parse_completion(br#"{"model":"m","prompt":""}"#).is_err());
        assert!(parse_completion(br#"{"model":"m","prompt":"x","echo":true}"#).is_err());
        assert!(parse_completion(br#"{"model":"m","prompt":"x","messages":[]}"#).is_err());
    }

    #[test]
    fn peek() {
        assert!(
            matches!(peek_route(br#"{"model":"a","stream":true,"x":[1]}"#), Ok((ref m, true)) if m == "a")
        );
        assert!(peek_route(br#"{"stream":true}"#).is_err());
        assert!(peek_route(br#"{"model":"a","stream":"yes"}"#).is_err());
        assert!(peek_route(b"not json").is_err());
    }
}
