//! OpenAI's attribute filters, as `file_search` and vector store search take
//! them: a comparison `{"type": "eq"|"ne"|"gt"|"gte"|"lt"|"lte"|"in"|"nin",
//! "key", "value"}` or a compound `{"type": "and"|"or", "filters": [...]}`.
//!
//! The rules:
//! * Parsing is strict: an unknown `type`, a missing `key` or `value`, a
//!   list where one value is wanted (or the other way round), or nesting
//!   deeper than [`MAX_DEPTH`] is an error naming it.
//! * A file without the attribute never matches a comparison on it (also
//!   not `ne` or `nin`).
//! * `eq`/`ne`/`in`/`nin` compare strings, numbers and booleans of the same
//!   type; `gt`/`gte`/`lt`/`lte` compare numbers with numbers and strings
//!   with strings (so ISO dates order as expected).

use serde_json::{Map, Value};
use std::cmp::Ordering;

pub const MAX_DEPTH: usize = 8;

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Compare { op: Op, key: String, value: Value },
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    Nin,
}

impl Filter {
    pub fn parse(v: &Value) -> Result<Filter, String> {
        parse(v, 0)
    }

    /// Does a file with these attributes pass?
    pub fn matches(&self, attrs: &Map<String, Value>) -> bool {
        match self {
            Filter::And(fs) => fs.iter().all(|f| f.matches(attrs)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(attrs)),
            Filter::Compare { op, key, value } => {
                let Some(have) = attrs.get(key) else {
                    return false;
                };
                match op {
                    Op::Eq => same(have, value),
                    Op::Ne => !same(have, value),
                    Op::In => value
                        .as_array()
                        .is_some_and(|l| l.iter().any(|v| same(have, v))),
                    Op::Nin => value
                        .as_array()
                        .is_some_and(|l| !l.iter().any(|v| same(have, v))),
                    Op::Gt => order(have, value) == Some(Ordering::Greater),
                    Op::Gte => matches!(
                        order(have, value),
                        Some(Ordering::Greater | Ordering::Equal)
                    ),
                    Op::Lt => order(have, value) == Some(Ordering::Less),
                    Op::Lte => matches!(order(have, value), Some(Ordering::Less | Ordering::Equal)),
                }
            }
        }
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

#[allow(clippy::collapsible_match)] // a list check and a scalar check, apart
fn parse(v: &Value, depth: usize) -> Result<Filter, String> {
    if depth > MAX_DEPTH {
        return Err(format!("filters nest deeper than {MAX_DEPTH} levels"));
    }
    let o = v
        .as_object()
        .ok_or_else(|| "a filter must be an object with a `type`".to_string())?;
    let ty = o
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| "a filter needs a `type`".to_string())?;
    let op = match ty {
        "and" | "or" => {
            let fs = o
                .get("filters")
                .and_then(Value::as_array)
                .ok_or_else(|| format!("an `{ty}` filter needs a `filters` list"))?
                .iter()
                .map(|f| parse(f, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(k) = o.keys().find(|k| !matches!(k.as_str(), "type" | "filters")) {
                return Err(format!("an `{ty}` filter has no field `{k}`"));
            }
            return Ok(if ty == "and" {
                Filter::And(fs)
            } else {
                Filter::Or(fs)
            });
        }
        "eq" => Op::Eq,
        "ne" => Op::Ne,
        "gt" => Op::Gt,
        "gte" => Op::Gte,
        "lt" => Op::Lt,
        "lte" => Op::Lte,
        "in" => Op::In,
        "nin" => Op::Nin,
        other => {
            return Err(format!(
                "`{other}` is not a filter type; use eq, ne, gt, gte, lt, lte, in, nin, and or or"
            ));
        }
    };
    if let Some(k) = o
        .keys()
        .find(|k| !matches!(k.as_str(), "type" | "key" | "value"))
    {
        return Err(format!("a `{ty}` filter has no field `{k}`"));
    }
    let key = o
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("a `{ty}` filter needs a string `key`"))?
        .to_string();
    let value = o
        .get("value")
        .cloned()
        .ok_or_else(|| format!("a `{ty}` filter needs a `value`"))?;
    let scalar = |v: &Value| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_));
    match op {
        Op::In | Op::Nin => {
            if !value.as_array().is_some_and(|l| l.iter().all(scalar)) {
                return Err(format!(
                    "a `{ty}` filter's `value` must be a list of strings or numbers"
                ));
            }
        }
        _ if !scalar(&value) => {
            return Err(format!(
                "a `{ty}` filter's `value` must be a string, number or boolean"
            ));
        }
        _ => {}
    }
    Ok(Filter::Compare { op, key, value })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn attrs(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn comparisons_and_compounds() {
        let a = attrs(json!({"course": "cs101", "week": 3, "final": false, "date": "2026-10-01"}));
        let t = |f: Value| Filter::parse(&f).unwrap().matches(&a);
        assert!(t(json!({"type": "eq", "key": "course", "value": "cs101"})));
        assert!(!t(json!({"type": "ne", "key": "course", "value": "cs101"})));
        assert!(t(json!({"type": "gte", "key": "week", "value": 3})));
        assert!(t(json!({"type": "lt", "key": "week", "value": 3.5})));
        assert!(t(
            json!({"type": "gt", "key": "date", "value": "2026-09-30"})
        ));
        assert!(t(json!({"type": "in", "key": "week", "value": [1, 3]})));
        assert!(t(json!({"type": "nin", "key": "course", "value": ["bio"]})));
        assert!(t(json!({"type": "eq", "key": "final", "value": false})));
        assert!(!t(json!({"type": "ne", "key": "missing", "value": "x"})));
        assert!(!t(json!({"type": "gt", "key": "course", "value": 3})));
        assert!(t(json!({"type": "or", "filters": [
            {"type": "eq", "key": "course", "value": "bio"},
            {"type": "and", "filters": [{"type": "eq", "key": "week", "value": 3}]}
        ]})));
    }

    #[test]
    fn bad_filters_are_named() {
        let e = |f: Value| Filter::parse(&f).unwrap_err();
        assert!(
            e(json!({"type": "like", "key": "a", "value": "b"}))
                .contains("`like` is not a filter type")
        );
        assert!(e(json!({"type": "eq", "value": "b"})).contains("needs a string `key`"));
        assert!(e(json!({"type": "in", "key": "a", "value": "b"})).contains("must be a list"));
        assert!(
            e(json!({"type": "eq", "key": "a", "value": [1]}))
                .contains("string, number or boolean")
        );
        assert!(e(json!({"type": "and"})).contains("`filters` list"));
        assert!(
            e(json!({"type": "eq", "key": "a", "value": 1, "extra": 1}))
                .contains("no field `extra`")
        );
        let mut deep = json!({"type": "eq", "key": "a", "value": 1});
        for _ in 0..20 {
            deep = json!({"type": "and", "filters": [deep]});
        }
        assert!(e(deep).contains("deeper"));
    }
}
