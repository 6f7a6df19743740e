//! `POST /v1/responses`: the part of OpenAI's Responses API that answers a
//! question from course material, with citations. `parse.rs` reads the
//! request, this file is the policy (search, prompt, the chat call),
//! `sources.rs` the prompt's sources and the citations, `answer.rs` and
//! `stream.rs` the answer, whole or streamed.
//!
//! The rules:
//! * **Fields taken:** `model`, `input` (a string, or messages with `role`
//!   user/assistant/system/developer and `content` a string or
//!   `input_text`/`output_text` parts), `instructions`, `max_output_tokens`,
//!   `temperature`, `top_p`, `stream`, `tools`, `tool_choice`, `include`
//!   (`file_search_call.results`), `metadata`, `user`, `store` (false, or
//!   true: nothing is kept either way, so `GET /v1/responses/{id}` does not
//!   exist), `parallel_tool_calls`, `truncation: "disabled"`, and
//!   `text.format` (`text`, `json_object`, or `json_schema` — the chat
//!   API's `response_format`, constrained the same way). Any other
//!   field, tool type or value is a 400 naming it — never ignored.
//! * **`file_search`** (`vector_store_ids`, `max_num_results`, `filters`,
//!   `ranking_options`): with `tool_choice` `auto` or `required` Aula always
//!   searches (small models do not decide reliably); `none` does not. The
//!   query is the last user message. A store the caller may not read is a
//!   404, as everywhere.
//! * **The prompt:** the results, numbered, in a system message after the
//!   instructions, as many as fit the model's context next to the question
//!   and `max_output_tokens`. The chat then runs as the caller's own
//!   `/v1/chat/completions` call: limits, fair queue, ledger and usage
//!   count the retrieved text.
//! * **Citations:** the model is asked to cite sources as `[n]`. Each marker
//!   in the answer becomes a `file_citation` annotation (at the marker's
//!   index) of that source's file; an answer that cites nothing gets one
//!   citation of the best result's file at its end.

use crate::auth::Caller;
use crate::identity::Identity;
use aula_protocol::ApiError;
use aula_protocol::FinishReason;
use aula_protocol::wire::{Annotation, ChatRequest, ItemStatus, ResponseUsage, Role, Turn};
use aula_store::now_ms;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;

mod answer;
mod parse;
mod sources;
mod stream;

use answer::*;
use parse::*;
use sources::*;
use stream::*;

/// What `/v1/responses` holds: the request path (its chat calls) and the
/// vector stores (its `file_search` tool).
#[derive(Clone)]
pub struct Handle {
    pub gw: Arc<crate::pipeline::Gateway>,
    pub rag: crate::rag::Handle,
}

/// `POST /v1/responses`.
pub async fn create(State(st): State<Handle>, Caller(id): Caller, body: Body) -> Response {
    match run(st, &id, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run(st: Handle, id: &Identity, body: Body) -> Result<Response, ApiError> {
    let bytes = crate::body::read_json(body).await?;
    respond(st, id, bytes).await
}

/// A Responses call for `id`, its body read: the API's, and the web page's
/// playground when it searches course material.
pub(crate) async fn respond(
    st: Handle,
    id: &crate::identity::Identity,
    bytes: bytes::Bytes,
) -> Result<Response, ApiError> {
    let o = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return Err(ApiError::invalid("the body must be a JSON object")),
        Err(e) => {
            return Err(ApiError::invalid(format!(
                "the body is not valid JSON: {e}"
            )));
        }
    };
    let p = parse(&o)?;
    let route = st.gw.router.get(&p.model).map_err(|_| {
        ApiError::ModelNotFound(format!(
            "the model `{}` does not exist; models you may use: {}",
            p.model,
            st.gw.visible_models(id).join(", ")
        ))
    })?;
    let context = route.context;
    let sources = match &p.search {
        Some(s) if !s.stores.is_empty() => {
            for store_id in &s.stores {
                match st
                    .gw
                    .store
                    .vector_store(store_id)
                    .await
                    .map_err(crate::files::store_error)?
                {
                    Some(v) if crate::rag::readable(&v, id) => {}
                    _ => return Err(ApiError::NotFound(format!("no vector store `{store_id}`"))),
                }
            }
            let found = crate::rag::search::search(
                &st.rag,
                id,
                &s.stores,
                &crate::rag::search::Request {
                    queries: &s.params.queries,
                    mode: s.params.mode,
                    filter: s.params.filter.as_ref(),
                    k: s.params.k,
                    threshold: s.params.threshold,
                },
            )
            .await?;
            Some(fitting(found, context, &p))
        }
        _ => None,
    };
    let mut messages = Vec::new();
    if let Some(i) = &p.instructions {
        messages.push(Turn::text(Role::System, i.clone()));
    }
    if let Some(s) = sources.as_ref().filter(|s| !s.is_empty()) {
        messages.push(Turn::text(Role::System, sources_message(s)));
    }
    messages.extend(p.messages.iter().cloned());
    let chat = ChatRequest {
        model: p.model.clone(),
        messages,
        max_tokens: p.max_output_tokens,
        temperature: p.temperature,
        top_p: p.top_p,
        // The chat API validates the format (a bad schema is its 400).
        response_format: p.response_format.clone(),
        tools: p.functions.clone(),
        tool_choice: p.chat_tool_choice.clone(),
        ..ChatRequest::default()
    };
    let shell = Shell {
        id: format!("resp_{}", crate::random_id(24)),
        created_at: now_ms() / 1000,
        model: p.model.clone(),
        p_instructions: p.instructions.clone(),
        max_output_tokens: p.max_output_tokens,
        temperature: p.temperature,
        top_p: p.top_p,
        tools: {
            let mut t: Vec<Value> = p.search.iter().map(|s| s.tool.clone()).collect();
            t.extend(p.functions.iter().map(|f| {
                let mut flat = serde_json::to_value(&f.function).unwrap_or_default();
                flat["type"] = json!("function");
                flat
            }));
            t
        },
        tool_choice: p.tool_choice.clone(),
        metadata: p.metadata.clone(),
        text_format: p.text_format.clone(),
    };
    let fs_id = format!("fs_{}", crate::random_id(24));
    let msg_id = format!("msg_{}", crate::random_id(24));
    let sources = sources.unwrap_or_default();
    let searched = p.search.as_ref().is_some_and(|s| !s.stores.is_empty());
    if p.stream {
        let events = st.gw.chat_stream(id, chat).await?;
        return Ok(stream(
            events,
            Streamed {
                shell,
                fs_id,
                msg_id,
                p,
                sources,
                searched,
            },
        ));
    }
    let answer = st.gw.chat(id, chat).await?;
    let Some(choice) = answer.choices.into_iter().next() else {
        return Err(ApiError::BadGateway("the chat answered no choice".into()));
    };
    let text = choice.message.content.unwrap_or_default();
    let cut = choice.finish_reason == FinishReason::Length;
    let mut output = Vec::new();
    if searched {
        output.push(search_item(&fs_id, &p, &sources, ItemStatus::Completed));
    }
    let notes = if searched {
        annotations(&text, &sources)
    } else {
        Vec::new()
    };
    let calls = choice.message.tool_calls;
    if calls.is_empty() || !text.is_empty() {
        let status = if cut {
            ItemStatus::Incomplete
        } else {
            ItemStatus::Completed
        };
        output.push(message_item(&msg_id, &text, notes, status));
    }
    output.extend(
        calls
            .iter()
            .map(|c| function_call_out(c, ItemStatus::Completed)),
    );
    let u = answer.usage.unwrap_or_default();
    let usage = ResponseUsage::new(u64::from(u.prompt_tokens), u64::from(u.completion_tokens));
    let ending = if cut { Ending::Cut } else { Ending::Completed };
    Ok(axum::Json(shell.object(ending, output, Some(usage))).into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::Map;

    fn found(file: &str) -> crate::rag::search::Found {
        crate::rag::search::Found {
            store_id: "vs".into(),
            file_id: file.into(),
            filename: format!("{file}.txt"),
            score: 1.0,
            attributes: Map::new(),
            text: "x".into(),
        }
    }

    #[test]
    fn markers_become_citations_and_an_uncited_answer_cites_the_best_source() {
        let s = [found("a"), found("b")];
        let cite = |index: usize, file: &str| Annotation::FileCitation {
            index,
            file_id: file.into(),
            filename: format!("{file}.txt"),
        };
        let a = annotations("Cells [2] make energy [1]. [9] [x]", &s);
        assert_eq!(a, vec![cite(6, "b"), cite(22, "a")]);
        assert_eq!(annotations("né answer", &s), vec![cite(9, "a")]);
        assert!(annotations("x", &[]).is_empty());
    }

    #[test]
    fn unknown_fields_and_tools_are_named() {
        let e = |v: Value| match parse(v.as_object().unwrap()) {
            Err(e) => e.to_string(),
            Ok(_) => "ok".into(),
        };
        assert!(
            e(json!({"model": "m", "input": "q", "previous_response_id": "r"}))
                .contains("`previous_response_id` is not supported")
        );
        assert!(
            e(json!({"model": "m", "input": "q", "tools": [{"type": "web_search"}]}))
                .contains("`web_search` are not supported")
        );
        assert!(
            e(json!({"model": "m", "input": "q", "tools": [{"type": "file_search"}]}))
                .contains("vector_store_ids")
        );
        assert!(
            e(json!({"model": "m", "input": "q", "include": ["reasoning.encrypted_content"]}))
                .contains("cannot be included")
        );
        assert!(e(json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]})).contains("input_image"));
        assert_eq!(
            e(
                json!({"model": "m", "input": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": [{"type": "input_text", "text": "q"}]}]})
            ),
            "ok"
        );
        assert!(e(json!({"model": "m", "input": "q", "tools": [{"type": "file_search", "vector_store_ids": ["vs"], "filters": {"type": "like"}}]})).contains("like"));
        assert!(
            e(json!({"model": "m", "input": "q", "text": {"format": {"type": "xml"}}}))
                .contains("text.format.type")
        );
        assert!(
            e(json!({"model": "m", "input": "q", "text": {"verbosity": "low"}}))
                .contains("text.verbosity")
        );
        assert!(e(json!({"model": "m", "input": "q", "tool_choice": {"type": "function", "name": "f"}})).contains("not among `tools`"));
        assert!(
            e(json!({"model": "m", "input": "q", "tool_choice": {"type": "file_search"}}))
                .contains("not among `tools`")
        );
        let p = parse(json!({"model": "m", "input": "q", "text": {"format": {"type": "json_schema", "name": "a", "schema": {"type": "object"}, "strict": true}}}).as_object().unwrap()).unwrap_or_else(|_| panic!());
        assert_eq!(
            p.response_format.unwrap(),
            json!({"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}, "strict": true}})
        );
    }
}
