//! `/v1/embeddings`, as OpenAI defines it, validated in one place.
//!
//! The rules:
//! * `input` is a string, an array of strings, an array of token ids, or an
//!   array of arrays of token ids; between 1 and [`MAX_EMBED_INPUTS`]
//!   inputs; an empty string, an empty array or a nested array of the wrong
//!   depth is a 400 naming `input`.
//! * Token ids are **cl100k_base** ids — what tiktoken and LangChain's
//!   `OpenAIEmbeddings` send by default. The engine decodes them to text and
//!   embeds that text with the model's own tokenizer; an id outside
//!   cl100k_base is a 400.
//! * `encoding_format` is `float` (the default) or `base64`: the vector's
//!   little-endian f32 bytes, which the official `openai` client asks for by
//!   default and decodes itself.
//! * `dimensions` is honoured only when it equals the model's dimension (no
//!   model served here supports truncation); anything else is a 400 naming
//!   the model's dimension — never silently ignored.
//! * An input longer than the model's limit is a 400 with both numbers, as
//!   OpenAI does, unless the request sets `truncate_prompt_tokens` (vLLM's
//!   field): a positive number of tokens, or -1 for the model's limit; the
//!   input is then cut to that many tokens (keeping the model's closing
//!   separator).
//! * `user` is accepted and not used.

use crate::ApiError;
use crate::wire::{Embedding, EmbeddingList, EmbeddingUsage, EmbeddingVector};
use base64::Engine as _;
use serde_json::{Map, Value};

/// The most inputs one request may carry (OpenAI's limit).
pub const MAX_EMBED_INPUTS: usize = 2048;

const FIELDS: &[&str] = &[
    "model",
    "input",
    "encoding_format",
    "dimensions",
    "user",
    "truncate_prompt_tokens",
];

/// One input to embed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbedInput {
    Text(String),
    /// cl100k_base token ids.
    Tokens(Vec<u32>),
}

/// How to treat an input longer than the model takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truncate {
    /// Refuse it (400), as OpenAI does.
    Refuse,
    /// Cut it to the model's limit.
    ModelLimit,
    /// Cut it to this many tokens (or the model's limit, if smaller).
    Tokens(u32),
}

#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingRequest {
    pub model: String,
    pub inputs: Vec<EmbedInput>,
    pub base64: bool,
    pub dimensions: Option<u32>,
    pub truncate: Truncate,
}

fn bad(msg: impl Into<String>) -> ApiError {
    let msg = msg.into();
    if msg.contains("input") {
        ApiError::invalid_param("input", msg)
    } else {
        ApiError::invalid_param("input", format!("`input`: {msg}"))
    }
}

fn token_id(v: &Value) -> Result<u32, ApiError> {
    crate::request::whole_u64(v)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| bad(format!("token ids must be non-negative integers, got {v}")))
}

fn token_array(items: &[Value]) -> Result<Vec<u32>, ApiError> {
    if items.is_empty() {
        return Err(bad("an input must not be an empty array of tokens"));
    }
    items.iter().map(token_id).collect()
}

fn parse_input(v: Option<&Value>) -> Result<Vec<EmbedInput>, ApiError> {
    let inputs = match v {
        None | Some(Value::Null) => return Err(bad("`input` is required")),
        Some(Value::String(s)) => vec![EmbedInput::Text(s.clone())],
        Some(Value::Array(items)) => match items.first() {
            None => return Err(bad("`input` must not be an empty array")),
            Some(Value::String(_)) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(EmbedInput::Text(s.clone())),
                    _ => Err(bad("an array of strings must hold only strings")),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(Value::Number(_)) => vec![EmbedInput::Tokens(token_array(items)?)],
            Some(Value::Array(_)) => items
                .iter()
                .map(|i| match i {
                    Value::Array(t) => token_array(t).map(EmbedInput::Tokens),
                    _ => Err(bad(
                        "an array of token arrays must hold only arrays of integers",
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => {
                return Err(bad(
                    "`input` must be a string, an array of strings, an array of token ids, \
                         or an array of arrays of token ids",
                ));
            }
        },
        Some(_) => {
            return Err(bad(
                "`input` must be a string, an array of strings, an array of token ids, \
                 or an array of arrays of token ids",
            ));
        }
    };
    if inputs.len() > MAX_EMBED_INPUTS {
        return Err(bad(format!(
            "at most {MAX_EMBED_INPUTS} inputs per request, got {}",
            inputs.len()
        )));
    }
    if inputs
        .iter()
        .any(|i| matches!(i, EmbedInput::Text(s) if s.is_empty()))
    {
        return Err(bad("an input must not be an empty string"));
    }
    Ok(inputs)
}

/// Parse and validate an embeddings request body.
pub fn parse_embeddings(body: &[u8]) -> Result<EmbeddingRequest, ApiError> {
    parse_embeddings_object(&crate::request::parse_object(body)?)
}

/// [`parse_embeddings`] on a body already parsed (the gateway's).
pub fn parse_embeddings_object(obj: &Map<String, Value>) -> Result<EmbeddingRequest, ApiError> {
    for key in obj.keys() {
        if !FIELDS.contains(&key.as_str()) {
            return Err(ApiError::invalid_param(
                key,
                format!("unrecognized request argument supplied: {key}"),
            ));
        }
    }
    let model = match obj.get("model") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(ApiError::invalid_param("model", "`model` is required"));
        }
        Some(_) => return Err(ApiError::invalid_param("model", "`model` must be a string")),
    };
    let inputs = parse_input(obj.get("input"))?;
    let base64 = match obj.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s == "float" => false,
        Some(Value::String(s)) if s == "base64" => true,
        Some(v) => {
            return Err(ApiError::invalid_param(
                "encoding_format",
                format!("`encoding_format` must be \"float\" or \"base64\", got {v}"),
            ));
        }
    };
    let dimensions = match obj.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            crate::request::whole_u64(v)
                .filter(|n| *n >= 1)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    ApiError::invalid_param("dimensions", "`dimensions` must be a positive integer")
                })?,
        ),
    };
    match obj.get("user") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(_) => return Err(ApiError::invalid_param("user", "`user` must be a string")),
    }
    let truncate = match obj.get("truncate_prompt_tokens") {
        None | Some(Value::Null) => Truncate::Refuse,
        Some(v) => match crate::request::whole_i64(v) {
            Some(-1) => Truncate::ModelLimit,
            Some(n) if n >= 1 => Truncate::Tokens(u32::try_from(n).unwrap_or(u32::MAX)),
            _ => {
                return Err(ApiError::invalid_param(
                    "truncate_prompt_tokens",
                    "`truncate_prompt_tokens` must be a positive integer, or -1 for the model's limit",
                ));
            }
        },
    };
    Ok(EmbeddingRequest {
        model,
        inputs,
        base64,
        dimensions,
        truncate,
    })
}

/// The response body: one `embedding` object per input, in input order.
pub fn embeddings_response(
    model: &str,
    vectors: Vec<Vec<f32>>,
    base64: bool,
    prompt_tokens: u64,
) -> EmbeddingList {
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                EmbeddingVector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                EmbeddingVector::Float(v)
            };
            Embedding {
                object: "embedding".into(),
                index: i as u32,
                embedding,
            }
        })
        .collect();
    EmbeddingList {
        object: "list".into(),
        data,
        model: model.to_string(),
        usage: EmbeddingUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<EmbeddingRequest, ApiError> {
        parse_embeddings(v.to_string().as_bytes())
    }

    #[test]
    fn every_input_shape() {
        let r = parse(json!({"model": "m", "input": "hi"})).unwrap();
        assert_eq!(r.inputs, vec![EmbedInput::Text("hi".into())]);
        assert!(!r.base64);
        let r = parse(json!({"model": "m", "input": ["a", "b"]})).unwrap();
        assert_eq!(r.inputs.len(), 2);
        let r = parse(json!({"model": "m", "input": [1, 2, 3]})).unwrap();
        assert_eq!(r.inputs, vec![EmbedInput::Tokens(vec![1, 2, 3])]);
        let r = parse(json!({"model": "m", "input": [[1], [2, 3]], "encoding_format": "base64"}))
            .unwrap();
        assert_eq!(
            r.inputs,
            vec![EmbedInput::Tokens(vec![1]), EmbedInput::Tokens(vec![2, 3])]
        );
        assert!(r.base64);
    }

    #[test]
    fn bad_inputs_name_the_field() {
        for body in [
            json!({"model": "m"}),
            json!({"model": "m", "input": ""}),
            json!({"model": "m", "input": []}),
            json!({"model": "m", "input": ["a", ""]}),
            json!({"model": "m", "input": ["a", 1]}),
            json!({"model": "m", "input": [1, "a"]}),
            json!({"model": "m", "input": [[1], []]}),
            json!({"model": "m", "input": [[[1]]]}),
            json!({"model": "m", "input": [-1]}),
            json!({"model": "m", "input": [1.5]}),
            json!({"model": "m", "input": {"a": 1}}),
            json!({"model": "m", "input": 7}),
            json!({"model": "m", "input": vec!["x"; MAX_EMBED_INPUTS + 1]}),
        ] {
            let e = parse(body.clone()).unwrap_err();
            assert_eq!(e.status().as_u16(), 400, "{body}");
            assert!(e.to_string().contains("input"), "{body}: {e}");
        }
        assert!(parse(json!({"model": "m", "input": vec!["x"; MAX_EMBED_INPUTS]})).is_ok());
    }

    #[test]
    fn options_are_checked() {
        assert!(parse(json!({"model": "m", "input": "a", "encoding_format": "hex"})).is_err());
        assert!(parse(json!({"model": "m", "input": "a", "dimensions": 0})).is_err());
        assert_eq!(
            parse(json!({"model": "m", "input": "a", "dimensions": 384}))
                .unwrap()
                .dimensions,
            Some(384)
        );
        assert!(parse(json!({"model": "m", "input": "a", "temperature": 1})).is_err());
        assert!(parse(json!({"model": "m", "input": "a", "user": "u1"})).is_ok());
        assert_eq!(
            parse(json!({"model": "m", "input": "a", "truncate_prompt_tokens": -1}))
                .unwrap()
                .truncate,
            Truncate::ModelLimit
        );
        assert_eq!(
            parse(json!({"model": "m", "input": "a", "truncate_prompt_tokens": 16}))
                .unwrap()
                .truncate,
            Truncate::Tokens(16)
        );
        assert!(parse(json!({"model": "m", "input": "a", "truncate_prompt_tokens": 0})).is_err());
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let v = vec![vec![1.0f32, -2.5, 0.125]];
        let r = serde_json::to_value(embeddings_response("m", v.clone(), true, 3)).unwrap();
        let b64 = r["data"][0]["embedding"].as_str().unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let back: Vec<f32> = bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(back, v[0]);
        let f = serde_json::to_value(embeddings_response("m", v, false, 3)).unwrap();
        assert_eq!(f["data"][0]["embedding"], json!([1.0, -2.5, 0.125]));
        assert_eq!(f["usage"]["prompt_tokens"], 3);
        assert_eq!(f["object"], "list");
    }
}
