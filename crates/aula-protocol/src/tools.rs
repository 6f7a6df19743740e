//! Function calling: `tools` and `tool_choice` as OpenAI defines them.
//!
//! The rules:
//! * A tool is `{"type": "function", "function": {"name", "description",
//!   "parameters"}}`; names are 1-64 of `a-z A-Z 0-9 _ -`, unique; at most
//!   [`MAX_TOOLS`] tools.
//! * `tool_choice` is `none` (the tools are not offered), `auto` (the model
//!   may call one; the default when tools are given), `required` (it must
//!   call one), or `{"type": "function", "function": {"name"}}` (it must call
//!   that one).
//! * Where the model's own chat template knows tools (it renders `tools`
//!   and `tool_calls`), it gets them as data, in Hugging Face's convention,
//!   and the history's calls and results too ([`crate::template`] says
//!   which format its model writes). Otherwise the model is told about the
//!   tools in a system message and asked to answer a call as one JSON
//!   object `{"name": ..., "arguments": {...}}`; earlier calls and results
//!   are written into the prompt as text.
//! * With `required` or a named tool, decoding is constrained to exactly
//!   one call, in the template's format where Aula knows how to force it
//!   (Hermes/Qwen `<tool_call>` tags, Llama 3's `{"name", "parameters"}`),
//!   else the JSON object above (and then the tools go in the system
//!   message even for a template that knows them); the arguments follow the
//!   tool's own `parameters` schema. With `auto` the answer is read by
//!   [`crate::tool_parse`], which knows the formats models are trained on
//!   (Hermes/Qwen `<tool_call>`, Llama 3.x JSON, Mistral `[TOOL_CALLS]`,
//!   DeepSeek V3/R1/V3.1, Granite, gpt-oss's harmony channels): every
//!   well-formed call of an offered tool becomes one of `tool_calls`
//!   (several: parallel calls), anything else is text, and a leading
//!   `<think>` block or harmony's `analysis` channel is `reasoning_content`.
//!   Arguments that are not a JSON object are never passed off as a call.
//! * Streaming follows [`crate::tool_stream`].

use crate::ApiError;
use serde_json::{Map, Value, json};

/// The most tools one request may offer.
pub const MAX_TOOLS: usize = 128;

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: String,
    /// The arguments' JSON Schema (`{"type": "object"}` when not given).
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    None,
    Auto,
    Required,
    Named(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub tools: Vec<Tool>,
    pub choice: ToolChoice,
    /// `parallel_tool_calls` (default true): false keeps only an answer's
    /// first call.
    pub parallel: bool,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Read `tools` and `tool_choice` (None when no tools are offered).
pub fn parse_tools(obj: &Map<String, Value>) -> Result<Option<ToolSpec>, ApiError> {
    let bad = |m: String| ApiError::invalid_param("tools", m);
    let items = match obj.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(bad("`tools` must be a list".into())),
    };
    if items.len() > MAX_TOOLS {
        return Err(bad(format!(
            "at most {MAX_TOOLS} tools, got {}",
            items.len()
        )));
    }
    let mut tools: Vec<Tool> = Vec::with_capacity(items.len());
    for (i, t) in items.iter().enumerate() {
        let tool = parse_tool(i, t)?;
        if tools.iter().any(|x| x.name == tool.name) {
            return Err(bad(format!("two tools are named `{}`", tool.name)));
        }
        tools.push(tool);
    }
    let choice = parse_choice(obj, &tools)?;
    if tools.is_empty() {
        if matches!(choice, ToolChoice::Required | ToolChoice::Named(_)) {
            return Err(ApiError::invalid_param(
                "tool_choice",
                "`tool_choice` asks for a tool call but no tools were given",
            ));
        }
        return Ok(None);
    }
    let parallel = obj
        .get("parallel_tool_calls")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    Ok(Some(ToolSpec {
        tools,
        choice,
        parallel,
    }))
}

/// `tools[i]`: a function with a valid name, a description and a bounded
/// JSON Schema for its parameters.
fn parse_tool(i: usize, t: &Value) -> Result<Tool, ApiError> {
    let bad = |m: String| ApiError::invalid_param("tools", m);
    if t.get("type").and_then(Value::as_str) != Some("function") {
        return Err(bad(format!("tools[{i}].type must be \"function\"")));
    }
    let f = t
        .get("function")
        .filter(|f| f.is_object())
        .ok_or_else(|| bad(format!("tools[{i}].function is required")))?;
    let name = f.get("name").and_then(Value::as_str).unwrap_or("");
    if !valid_name(name) {
        return Err(bad(format!(
            "tools[{i}].function.name must be 1-64 letters, digits, _ or -; got {name:?}"
        )));
    }
    let description = match f.get("description") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(d)) => d.clone(),
        Some(_) => {
            return Err(bad(format!(
                "tools[{i}].function.description must be a string"
            )));
        }
    };
    let parameters = match f.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
        Some(p @ Value::Object(_)) if p.to_string().len() > crate::MAX_SCHEMA_BYTES => {
            return Err(bad(format!(
                "tools[{i}].function.parameters is larger than {} KiB",
                crate::MAX_SCHEMA_BYTES >> 10
            )));
        }
        Some(p @ Value::Object(_)) => {
            crate::request::check_schema_bounds(p, "tools")?;
            // Arguments are a JSON object: say so where the schema does not.
            let mut p = p.clone();
            match p.get("type") {
                None => {
                    p["type"] = json!("object");
                }
                Some(t) if t == "object" => {}
                Some(t) => {
                    return Err(bad(format!(
                        "tools[{i}].function.parameters must describe an object (the arguments); its type is {t}"
                    )));
                }
            }
            p
        }
        Some(_) => {
            return Err(bad(format!(
                "tools[{i}].function.parameters must be a JSON Schema object"
            )));
        }
    };
    Ok(Tool {
        name: name.to_string(),
        description,
        parameters,
    })
}

/// `tool_choice`: none, auto, required, or one of the tools by name.
fn parse_choice(obj: &Map<String, Value>, tools: &[Tool]) -> Result<ToolChoice, ApiError> {
    Ok(match obj.get("tool_choice") {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                return Err(ApiError::invalid_param(
                    "tool_choice",
                    format!(
                        "`tool_choice` must be none, auto, required or a function, got `{other}`"
                    ),
                ));
            }
        },
        Some(v @ Value::Object(_)) => {
            let name = v
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::invalid_param(
                        "tool_choice",
                        "`tool_choice` must be {\"type\": \"function\", \"function\": {\"name\": ...}}",
                    )
                })?;
            if !tools.iter().any(|t| t.name == name) {
                return Err(ApiError::invalid_param(
                    "tool_choice",
                    format!("`tool_choice` names `{name}`, which is not among the tools"),
                ));
            }
            ToolChoice::Named(name.to_string())
        }
        Some(_) => {
            return Err(ApiError::invalid_param(
                "tool_choice",
                "`tool_choice` must be a string or an object",
            ));
        }
    })
}

impl ToolSpec {
    /// Whether the model is offered the tools at all.
    pub fn active(&self) -> bool {
        self.choice != ToolChoice::None
    }

    fn offered(&self) -> Vec<&Tool> {
        match &self.choice {
            ToolChoice::Named(n) => self.tools.iter().filter(|t| &t.name == n).collect(),
            ToolChoice::None => Vec::new(),
            _ => self.tools.iter().collect(),
        }
    }

    /// The system text that tells the model about its tools.
    pub fn system_prompt(&self) -> String {
        let mut s = String::from(
            "You can call functions. To call one, answer with only a JSON object of the form \
             {\"name\": \"<function name>\", \"arguments\": {<arguments>}} and nothing else.",
        );
        match &self.choice {
            ToolChoice::Auto => s.push_str(" If no function is needed, answer normally."),
            ToolChoice::Required => s.push_str(" You must call one of the functions."),
            ToolChoice::Named(n) => s.push_str(&format!(" You must call `{n}`.")),
            ToolChoice::None => {}
        }
        s.push_str("\nFunctions:\n");
        for t in self.offered() {
            s.push_str(&format!(
                "- {}: {} Arguments (JSON Schema): {}\n",
                t.name,
                if t.description.is_empty() {
                    "(no description)"
                } else {
                    t.description.as_str()
                },
                t.parameters
            ));
        }
        s
    }

    /// The offered tools as chat templates read them (OpenAI's list).
    pub fn template_tools(&self) -> Value {
        Value::Array(
            self.offered()
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {
                        "name": t.name, "description": t.description, "parameters": t.parameters}})
                })
                .collect(),
        )
    }

    /// The JSON Schema a call must match, when a call is required: an
    /// object with `name` and the arguments under `args_key` (`arguments`;
    /// Llama 3's templates say `parameters`).
    pub fn required_call_schema(&self, args_key: &str) -> Option<Value> {
        if !matches!(self.choice, ToolChoice::Required | ToolChoice::Named(_)) {
            return None;
        }
        let variants: Vec<Value> = self
            .offered()
            .iter()
            .map(|t| {
                let mut props = Map::new();
                props.insert("name".into(), json!({"const": t.name}));
                props.insert(args_key.into(), t.parameters.clone());
                json!({
                    "type": "object",
                    "properties": props,
                    "required": ["name", args_key],
                    "additionalProperties": false,
                })
            })
            .collect();
        let mut schema = if variants.len() == 1 {
            variants.into_iter().next().unwrap_or_default()
        } else {
            json!({"anyOf": variants})
        };
        hoist_definitions(&mut schema, args_key);
        Some(schema)
    }

    /// What an answer holds for these tools: content, reasoning, and the
    /// calls in any format [`crate::tool_parse`] reads (only offered tools,
    /// arguments always a JSON object; only the first with
    /// `parallel_tool_calls: false`).
    pub fn parse_answer(&self, text: &str) -> crate::tool_parse::Parsed {
        let names: Vec<&str> = self.offered().iter().map(|t| t.name.as_str()).collect();
        let mut answer = crate::tool_parse::parse(text, &names);
        if !self.parallel {
            answer.calls.truncate(1);
        }
        answer
    }
}

/// A tool's `parameters` may carry its own `$defs` (or `definitions`) with
/// `$ref`s to `#/$defs/...` — what Pydantic writes for nested models. Nested
/// inside a call's schema, those refs would point at the call's root: the
/// definitions move there, renamed per tool (`t0_Item`), and the refs follow.
fn hoist_definitions(schema: &mut Value, args_key: &str) {
    let mut defs = Map::new();
    let mut hoist = |i: usize, call: &mut Value| {
        let Some(params) = call.pointer_mut(&format!("/properties/{args_key}")) else {
            return;
        };
        let Some(obj) = params.as_object_mut() else {
            return;
        };
        for key in ["$defs", "definitions"] {
            if let Some(Value::Object(d)) = obj.remove(key) {
                for (name, def) in d {
                    defs.insert(format!("t{i}_{name}"), def);
                }
                rewrite_refs(params, &format!("#/{key}/"), &format!("#/$defs/t{i}_"));
                return;
            }
        }
    };
    match schema.get_mut("anyOf").and_then(Value::as_array_mut) {
        Some(variants) => {
            for (i, v) in variants.iter_mut().enumerate() {
                hoist(i, v);
            }
        }
        None => hoist(0, schema),
    }
    if !defs.is_empty() {
        // The hoisted definitions may refer to each other: same renaming.
        let mut defs = Value::Object(defs);
        if let Some(d) = defs.as_object_mut() {
            let names: Vec<String> = d.keys().cloned().collect();
            for n in names {
                let prefix = n.split('_').next().unwrap_or("t0").to_string();
                if let Some(def) = d.get_mut(&n) {
                    rewrite_refs(def, "#/$defs/", &format!("#/$defs/{prefix}_"));
                    rewrite_refs(def, "#/definitions/", &format!("#/$defs/{prefix}_"));
                }
            }
        }
        schema["$defs"] = defs;
    }
}

/// Every `"$ref": "<from>X"` under `v` becomes `"<to>X"` (refs already
/// renamed, `#/$defs/tN_...`, are left alone).
fn rewrite_refs(v: &mut Value, from: &str, to: &str) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if k == "$ref"
                    && let Value::String(r) = x
                    && let Some(rest) = r.strip_prefix(from)
                    && !r.starts_with(to)
                {
                    *r = format!("{to}{rest}");
                } else {
                    rewrite_refs(x, from, to);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite_refs(x, from, to)),
        _ => {}
    }
}

/// An earlier assistant turn's `tool_calls`, checked, as chat templates
/// read them: `{"id", "type": "function", "function": {"name", "arguments"}}`
/// with the arguments a JSON object.
pub fn parse_calls(calls: &Value) -> Result<Vec<Value>, String> {
    let list = calls.as_array().ok_or("tool_calls must be a list")?;
    let mut out = Vec::new();
    for (j, c) in list.iter().enumerate() {
        let at = format!("tool_calls[{j}]");
        if c.get("type").is_some_and(|t| t != "function") {
            return Err(format!("{at}.type must be \"function\""));
        }
        let id = match c.get("id") {
            Some(Value::String(id)) if !id.is_empty() => id,
            _ => return Err(format!("{at}.id is required (a string)")),
        };
        let f = c
            .get("function")
            .ok_or_else(|| format!("{at}.function is required"))?;
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| valid_name(n))
            .ok_or_else(|| format!("{at}.function.name must be a function name"))?;
        let args = match f.get("arguments") {
            Some(Value::String(s)) => serde_json::from_str::<Value>(s).map_err(|e| {
                format!("{at}.function.arguments is not JSON ({e}): send the arguments the call was made with")
            })?,
            Some(v) => v.clone(),
            None => json!({}),
        };
        if !args.is_object() {
            return Err(format!("{at}.function.arguments must be a JSON object"));
        }
        out.push(
            json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn weather() -> Value {
        json!({"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})
    }

    #[test]
    fn nested_definitions_follow_the_arguments_into_the_call_schema() {
        // What Pydantic writes for a tool with a nested model.
        let params = json!({"type": "object", "properties": {"items": {"type": "array",
            "items": {"$ref": "#/$defs/Item"}}}, "required": ["items"],
            "$defs": {"Item": {"type": "object", "properties": {"tag": {"$ref": "#/$defs/Tag"}}},
                      "Tag": {"enum": ["a", "b"]}}});
        let t = parse_tools(&obj(json!({"tools": [
            {"type": "function", "function": {"name": "order", "parameters": params}},
            weather()], "tool_choice": "required"})))
        .unwrap()
        .unwrap();
        let s = t.required_call_schema("arguments").unwrap();
        assert_eq!(
            s["anyOf"][0]["properties"]["arguments"]["properties"]["items"]["items"]["$ref"],
            "#/$defs/t0_Item"
        );
        assert_eq!(
            s["$defs"]["t0_Item"]["properties"]["tag"]["$ref"],
            "#/$defs/t0_Tag"
        );
        assert!(
            s["anyOf"][0]["properties"]["arguments"]
                .get("$defs")
                .is_none()
        );
        // Parameters that are not an object are refused; a missing type is an object.
        let bad = parse_tools(&obj(json!({"tools": [{"type": "function",
            "function": {"name": "f", "parameters": {"type": "string"}}}]})));
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("must describe an object")
        );
        let ok = parse_tools(&obj(json!({"tools": [{"type": "function",
            "function": {"name": "f", "parameters": {"properties": {}}}}]})))
        .unwrap()
        .unwrap();
        assert_eq!(ok.tools[0].parameters["type"], "object");
    }

    #[test]
    fn parses_tools_and_choices() {
        let t = parse_tools(&obj(json!({"tools": [weather()]})))
            .unwrap()
            .unwrap();
        assert_eq!(t.choice, ToolChoice::Auto);
        assert_eq!(t.tools[0].name, "get_weather");
        assert!(t.required_call_schema("arguments").is_none());
        let t = parse_tools(&obj(
            json!({"tools": [weather()], "tool_choice": "required"}),
        ))
        .unwrap()
        .unwrap();
        let s = t.required_call_schema("arguments").unwrap();
        assert_eq!(s["properties"]["name"]["const"], "get_weather");
        let t = parse_tools(&obj(json!({"tools": [weather()],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}})))
        .unwrap()
        .unwrap();
        assert_eq!(t.choice, ToolChoice::Named("get_weather".into()));
        assert!(parse_tools(&obj(json!({"tools": []}))).unwrap().is_none());
        assert!(parse_tools(&obj(json!({}))).unwrap().is_none());
    }

    #[test]
    fn bad_tools_are_named() {
        for (body, param) in [
            (json!({"tools": {}}), "tools"),
            (json!({"tools": [{"type": "code"}]}), "tools"),
            (
                json!({"tools": [{"type": "function", "function": {"name": "a b"}}]}),
                "tools",
            ),
            (json!({"tools": [weather(), weather()]}), "tools"),
            (
                json!({"tools": [{"type": "function", "function": {"name": "f", "parameters":
                {"type": "object", "properties": {"x": {"type": "array", "minItems": 1000000}}}}}]}),
                "tools",
            ),
            (
                json!({"tools": [weather()], "tool_choice": "maybe"}),
                "tool_choice",
            ),
            (
                json!({"tools": [weather()], "tool_choice": {"type": "function", "function": {"name": "x"}}}),
                "tool_choice",
            ),
            (json!({"tool_choice": "required"}), "tool_choice"),
        ] {
            let e = parse_tools(&obj(body.clone())).unwrap_err();
            assert_eq!(e.body()["error"]["param"], param, "{body}");
        }
    }

    #[test]
    fn parallel_calls_unless_turned_off() {
        let two = "<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"A\"}}</tool_call>\n<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"B\"}}</tool_call>";
        let t = parse_tools(&obj(json!({"tools": [weather()]})))
            .unwrap()
            .unwrap();
        assert_eq!(t.parse_answer(two).calls.len(), 2);
        let t = parse_tools(&obj(
            json!({"tools": [weather()], "parallel_tool_calls": false}),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(t.parse_answer(two).calls.len(), 1);
    }

    #[test]
    fn calls_are_recognised_only_for_offered_tools() {
        let t = parse_tools(&obj(json!({"tools": [weather()]})))
            .unwrap()
            .unwrap();
        let calls = t
            .parse_answer(" {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}} ")
            .calls;
        let (n, a) = calls[0].clone();
        assert_eq!(n, "get_weather");
        assert_eq!(serde_json::from_str::<Value>(&a).unwrap()["city"], "Oslo");
        for text in [
            "{\"name\": \"rm_rf\", \"arguments\": {}}",
            "It is sunny.",
            "{\"name\": \"get_weather\", \"arguments\": 3}",
        ] {
            assert!(t.parse_answer(text).calls.is_empty(), "{text}");
        }
        let calls = parse_calls(&json!([{"id": "c1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]))
        .unwrap();
        assert_eq!(calls[0]["function"]["arguments"]["city"], "Oslo");
        for (bad, says) in [
            (
                json!([{"type": "function", "function": {"name": "f", "arguments": "{}"}}]),
                "id is required",
            ),
            (
                json!([{"id": "c", "function": {"name": "f", "arguments": "{oops"}}]),
                "not JSON",
            ),
            (
                json!([{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]),
                "JSON object",
            ),
            (
                json!([{"id": "c", "function": {"arguments": "{}"}}]),
                "function.name",
            ),
        ] {
            let e = parse_calls(&bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
