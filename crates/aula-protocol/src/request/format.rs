//! `response_format`: free text, any JSON object, or JSON matching a schema
//! (bounded in size and in the repetitions it may ask for).

use crate::ApiError;
use serde_json::Value;

/// What shape the output must have (`response_format`).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ResponseFormat {
    /// Free text.
    #[default]
    Text,
    /// Any JSON object (`{"type": "json_object"}`).
    JsonObject,
    /// JSON valid against this schema (`{"type": "json_schema", ...}`).
    JsonSchema { name: String, schema: Value },
}

/// The most bytes of a JSON schema accepted in `response_format`.
pub const MAX_SCHEMA_BYTES: usize = 64 << 10;

/// The largest repetition count a schema may ask for (`minItems`,
/// `maxLength`, ...): the grammar made from a schema spells repetitions out,
/// so `{"minItems": 1000000}` would make a grammar of millions of rules.
pub const MAX_SCHEMA_REPEAT: u64 = 1024;

/// Refuse a schema whose repetition bounds exceed [`MAX_SCHEMA_REPEAT`],
/// naming the keyword (`param` is the field the schema came in).
pub fn check_schema_bounds(schema: &Value, param: &str) -> Result<(), ApiError> {
    const KEYS: [&str; 6] = [
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "minProperties",
        "maxProperties",
    ];
    match schema {
        Value::Object(m) => {
            for (k, v) in m {
                if KEYS.contains(&k.as_str())
                    && v.as_f64().is_some_and(|n| n > MAX_SCHEMA_REPEAT as f64)
                {
                    return Err(ApiError::invalid_param(
                        param,
                        format!(
                            "`{k}: {v}` in the schema is more than the {MAX_SCHEMA_REPEAT} repetitions a grammar may spell out"
                        ),
                    ));
                }
                check_schema_bounds(v, param)?;
            }
            Ok(())
        }
        Value::Array(a) => a.iter().try_for_each(|v| check_schema_bounds(v, param)),
        _ => Ok(()),
    }
}

/// Parse `response_format`: `text`, `json_object`, or `json_schema` with
/// `json_schema: {name, schema, strict}`.
pub(super) fn parse_response_format(v: &Value) -> Result<ResponseFormat, ApiError> {
    let bad = |m: &str| ApiError::invalid_param("response_format", m);
    let kind = v
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("`response_format` must be an object with a `type`"))?;
    match kind {
        "text" => Ok(ResponseFormat::Text),
        "json_object" => Ok(ResponseFormat::JsonObject),
        "json_schema" => {
            let js = v.get("json_schema").filter(|j| j.is_object()).ok_or_else(|| {
                bad("`response_format.json_schema` is required for type json_schema, with `name` and `schema`")
            })?;
            let name = match js.get("name") {
                Some(Value::String(n)) if !n.is_empty() => n.clone(),
                None | Some(Value::Null) => "response".into(),
                _ => return Err(bad("`response_format.json_schema.name` must be a string")),
            };
            let schema = match js.get("schema") {
                Some(s @ Value::Object(_)) => s.clone(),
                None | Some(Value::Null) => serde_json::json!({}),
                _ => {
                    return Err(bad(
                        "`response_format.json_schema.schema` must be a JSON Schema object",
                    ));
                }
            };
            if schema.to_string().len() > MAX_SCHEMA_BYTES {
                return Err(bad(
                    "`response_format.json_schema.schema` is larger than 64 KiB",
                ));
            }
            check_schema_bounds(&schema, "response_format")?;
            match js.get("strict") {
                None | Some(Value::Null) | Some(Value::Bool(_)) => {}
                _ => {
                    return Err(bad(
                        "`response_format.json_schema.strict` must be a boolean",
                    ));
                }
            }
            Ok(ResponseFormat::JsonSchema { name, schema })
        }
        other => Err(bad(&format!(
            "response_format type `{other}` is not supported; use text, json_object or json_schema"
        ))),
    }
}
