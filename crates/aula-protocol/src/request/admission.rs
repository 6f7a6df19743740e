//! What the gateway reads of a request before admitting it.

use super::{parse_object, whole_u64};
use crate::ApiError;
use serde_json::{Map, Value};

/// The largest `max_tokens` the gateway accepts when it does not know the
/// model's context: far above any real context, far below where token
/// arithmetic (reservations, quotas) could overflow.
pub const MAX_TOKENS_BOUND: u64 = 1 << 31;

/// What the gateway needs to know about a request before it admits it. The
/// gateway forwards requests to engines that may accept more than Aula's own
/// engine does (tools, JSON mode...), so this reads only what admission
/// needs and leaves the rest to the engine. `max_tokens` is bounded here
/// (at most [`MAX_TOKENS_BOUND`]), so no client-chosen number can make a
/// reservation overflow.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    pub model: String,
    pub stream: bool,
    /// `max_tokens` or `max_completion_tokens`, if given.
    pub max_tokens: Option<u64>,
    /// Which of the two fields gave `max_tokens` (for error messages).
    pub max_tokens_field: &'static str,
    /// The client asked for the final usage chunk of a stream.
    pub include_usage: bool,
    /// An upper bound on the prompt's tokens: byte-level tokenizers never
    /// make more tokens than bytes, plus a few template tokens per message.
    pub prompt_tokens_bound: u64,
}

/// The longest stop sequence accepted, in bytes.
pub const MAX_STOP_BYTES: usize = 256;

/// Read the admission facts of a chat or text completion request.
pub fn peek_admission(body: &[u8]) -> Result<(Admission, Map<String, Value>), ApiError> {
    let obj = parse_object(body)?;
    Ok((admission_of(&obj)?, obj))
}

/// The admission facts of a request already read as an object (a client's
/// body, or a typed request the gateway made itself).
pub fn admission_of(obj: &Map<String, Value>) -> Result<Admission, ApiError> {
    let model = match obj.get("model") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(ApiError::invalid_param("model", "`model` is required"));
        }
        Some(_) => return Err(ApiError::invalid_param("model", "`model` must be a string")),
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "stream",
                "`stream` must be a boolean",
            ));
        }
    };
    let mut max_tokens = None;
    let mut max_tokens_field = "max_tokens";
    for key in ["max_tokens", "max_completion_tokens"] {
        match obj.get(key) {
            None | Some(Value::Null) => {}
            Some(v) => match whole_u64(v) {
                Some(n) if n > MAX_TOKENS_BOUND => {
                    return Err(ApiError::invalid_param(
                        key,
                        format!("`{key}` is too large: {n}; at most {MAX_TOKENS_BOUND}"),
                    ));
                }
                Some(n) if n >= 1 => {
                    max_tokens = Some(n);
                    max_tokens_field = key;
                }
                _ => {
                    return Err(ApiError::invalid_param(
                        key,
                        format!("`{key}` must be a positive integer"),
                    ));
                }
            },
        }
    }
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    fn text_bytes(v: &Value) -> u64 {
        match v {
            Value::String(s) => s.len() as u64,
            Value::Array(a) => a.iter().map(text_bytes).sum(),
            Value::Object(o) => o.values().map(text_bytes).sum(),
            _ => 0,
        }
    }
    /// Embedding inputs: text bytes, and token ids at a few bytes each (a
    /// cl100k id decodes to text that the model's own tokenizer may split).
    fn input_bound(v: &Value) -> u64 {
        match v {
            Value::String(s) => s.len() as u64 + 2,
            Value::Number(_) => 8,
            Value::Array(a) => a.iter().map(input_bound).sum(),
            _ => 0,
        }
    }
    let (bytes, parts) = match (obj.get("messages"), obj.get("prompt"), obj.get("input")) {
        (Some(Value::Array(m)), _, _) => (m.iter().map(text_bytes).sum(), m.len() as u64),
        (_, Some(p), _) => (text_bytes(p), 1),
        (_, _, Some(i)) => (input_bound(i), 0),
        _ => (0, 0),
    };
    Ok(Admission {
        model,
        stream,
        max_tokens,
        max_tokens_field,
        include_usage,
        prompt_tokens_bound: bytes + 8 * parts + 8,
    })
}

#[cfg(test)]
mod admission_tests {
    use super::*;

    #[test]
    fn peeks() {
        let (a, _) = peek_admission(
            br#"{"model":"m","messages":[{"role":"user","content":"hello"}],"max_tokens":9,"stream":true,"stream_options":{"include_usage":true},"tools":[]}"#,
        )
        .unwrap();
        assert_eq!(a.model, "m");
        assert!(a.stream && a.include_usage);
        assert_eq!(a.max_tokens, Some(9));
        assert_eq!(a.prompt_tokens_bound, 4 + 5 + 8 + 8);
        let (a, _) =
            peek_admission(br#"{"model":"m","prompt":"abc","max_completion_tokens":3}"#).unwrap();
        assert_eq!((a.max_tokens, a.stream), (Some(3), false));
        assert_eq!(a.max_tokens_field, "max_completion_tokens");
        assert!(peek_admission(br#"{"model":"m","max_tokens":-1}"#).is_err());
        assert!(peek_admission(br#"{"messages":[]}"#).is_err());
        assert!(peek_admission(b"[1]").is_err());
    }

    /// 2^63 and more would wrap a reservation negative; anything above the
    /// bound is refused, naming the field.
    #[test]
    fn absurd_max_tokens_are_refused() {
        for (key, n) in [
            ("max_tokens", "9223372036854775808"),
            ("max_completion_tokens", "18446744073709551615"),
            ("max_tokens", "2147483649"),
        ] {
            let body = format!(r#"{{"model":"m","prompt":"x","{key}":{n}}}"#);
            let e = peek_admission(body.as_bytes()).unwrap_err();
            assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
            assert_eq!(e.body()["error"]["param"], key);
        }
        let body = format!(r#"{{"model":"m","prompt":"x","max_tokens":{MAX_TOKENS_BOUND}}}"#);
        assert_eq!(
            peek_admission(body.as_bytes()).unwrap().0.max_tokens,
            Some(MAX_TOKENS_BOUND)
        );
    }
}
