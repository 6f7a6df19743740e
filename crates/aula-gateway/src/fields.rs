//! Reading a JSON request body's fields, for every feature's handlers: the
//! body as an object, unknown fields named, strings bounded, group lists
//! checked. Each error names the field (OpenAI's `param`).

use crate::identity::Identity;
use aula_protocol::ApiError;
use aula_store::Role;
use axum::body::Body;
use serde_json::{Map, Value};

/// The body, read within the usual bounds, as a JSON object.
pub async fn body_object(body: Body) -> Result<Map<String, Value>, ApiError> {
    let bytes = crate::body::read_json(body).await?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(ApiError::invalid("the body must be a JSON object")),
        Err(e) => Err(ApiError::invalid(format!(
            "the body is not valid JSON: {e}"
        ))),
    }
}

/// Refuse any field not in `allowed`, naming it and what the call takes.
pub fn only(o: &Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::invalid_param(
            k,
            format!(
                "unknown parameter `{k}`; this call takes: {}",
                allowed.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

/// A string field of at most `max` characters, if present and not null.
pub fn opt_str<'a>(
    o: &'a Map<String, Value>,
    key: &str,
    max: usize,
) -> Result<Option<&'a str>, ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s)),
        Some(Value::String(_)) => Err(ApiError::invalid_param(
            key,
            format!("`{key}` is longer than {max} characters"),
        )),
        Some(_) => Err(ApiError::invalid_param(
            key,
            format!("`{key}` must be a string"),
        )),
    }
}

/// `shared_with_groups`: at most 64 group names; only teachers and admins
/// may share `what` ("a vector store", "a fine-tuned model").
pub fn groups(
    v: Option<&Value>,
    id: &Identity,
    what: &str,
) -> Result<Option<Vec<String>>, ApiError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let list = v
        .as_array()
        .filter(|l| l.len() <= 64)
        .and_then(|l| {
            l.iter()
                .map(|g| {
                    g.as_str()
                        .filter(|s| !s.is_empty() && s.len() <= 64)
                        .map(String::from)
                })
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| {
            ApiError::invalid_param(
                "shared_with_groups",
                "`shared_with_groups` must be a list of group names",
            )
        })?;
    if !list.is_empty() && id.role == Role::Student {
        return Err(ApiError::Forbidden {
            message: format!("only teachers and admins may share {what} with groups"),
            code: "sharing_not_allowed",
            resets_at: None,
        });
    }
    Ok(Some(list))
}
