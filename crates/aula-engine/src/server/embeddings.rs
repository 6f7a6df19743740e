//! `/tokenize` and `/v1/embeddings`: an embedding model's side of the API.

use super::*;

/// `POST /tokenize`: `{"content": "text"}` answers `{"tokens": [ids]}`
/// (llama-server's shape); `{"content": ["a", "b"]}` answers one list per
/// string. Special tokens are added only with `"add_special": true`; text
/// that looks like a special token is text. An embedding model's answer
/// also carries `max_tokens`, the most one input may have (special tokens
/// included): what a vector store's chunks are measured against.
pub(super) async fn tokenize(State(st): State<Arc<EngineState>>, body: Bytes) -> Response {
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return ApiError::invalid(format!("the body is not JSON: {e}")).into_response(),
    };
    let add_special = v["add_special"].as_bool().unwrap_or(false);
    let vocab = st.model.vocab();
    let one = |t: &str| -> Vec<i32> {
        vocab
            .tokenize(t.as_bytes(), add_special, false)
            .into_iter()
            .map(|t| t.0)
            .collect()
    };
    let tokens = match &v["content"] {
        serde_json::Value::String(t) => json!(one(t)),
        serde_json::Value::Array(list) if list.len() <= 100_000 => {
            let mut out = Vec::with_capacity(list.len());
            for (i, t) in list.iter().enumerate() {
                let Some(t) = t.as_str() else {
                    return ApiError::invalid_param(
                        "content",
                        format!("content[{i}] is not a string"),
                    )
                    .into_response();
                };
                out.push(one(t));
            }
            json!(out)
        }
        _ => {
            return ApiError::invalid_param(
                "content",
                "`content` must be a string or a list of at most 100000 strings",
            )
            .into_response();
        }
    };
    let mut answer = json!({"tokens": tokens});
    if let Some(e) = &st.embed {
        answer["max_tokens"] = json!(e.info.max_tokens);
    }
    axum::Json(answer).into_response()
}

/// `/v1/embeddings`: validate, turn every input into the model's tokens
/// (cl100k ids decoded to text first), check each against the model's
/// limit, and wait for the embedding loop's vectors.
pub(super) async fn embeddings(State(st): State<Arc<EngineState>>, body: Bytes) -> Response {
    match embed_request(st, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

pub(super) async fn embed_request(st: Arc<EngineState>, body: &[u8]) -> Result<Response, ApiError> {
    let req = aula_protocol::parse_embeddings(body)?;
    if req.model != st.name {
        return Err(ApiError::ModelNotFound(format!(
            "the model `{}` does not exist; this engine serves: {}",
            req.model, st.name
        )));
    }
    let Some(e) = &st.embed else {
        return Err(ApiError::invalid_param(
            "model",
            format!(
                "`{}` is a chat model: it answers /v1/chat/completions and /v1/completions, not /v1/embeddings",
                st.name
            ),
        ));
    };
    if let Some(d) = req.dimensions
        && d as usize != e.info.dimensions
    {
        return Err(ApiError::invalid_param(
            "dimensions",
            format!(
                "`{}` makes vectors of {} dimensions and cannot shorten them; \
                 leave out `dimensions` or set it to {}",
                st.name, e.info.dimensions, e.info.dimensions
            ),
        ));
    }
    let limit = e.info.max_tokens;
    let cut = match req.truncate {
        aula_protocol::Truncate::Refuse => None,
        aula_protocol::Truncate::ModelLimit => Some(limit),
        aula_protocol::Truncate::Tokens(n) => Some((n as usize).clamp(2, limit)),
    };
    let vocab = st.model.vocab();
    let mut inputs = Vec::with_capacity(req.inputs.len());
    let mut prompt_tokens = 0u64;
    for (i, input) in req.inputs.iter().enumerate() {
        let text = match input {
            aula_protocol::EmbedInput::Text(t) => std::borrow::Cow::Borrowed(t.as_str()),
            aula_protocol::EmbedInput::Tokens(ids) => std::borrow::Cow::Owned(
                crate::cl100k::decode(ids)
                    .map_err(|m| ApiError::invalid_param("input", format!("input {i}: {m}")))?,
            ),
        };
        // Special tokens in user text are text, not control tokens.
        let mut tokens = vocab.tokenize(text.as_bytes(), true, false);
        if tokens.is_empty() {
            return Err(ApiError::invalid_param(
                "input",
                format!("input {i} is empty after tokenization"),
            ));
        }
        match cut {
            Some(n) if tokens.len() > n => {
                // Keep the closing separator the model expects.
                let last = tokens[tokens.len() - 1];
                tokens.truncate(n - 1);
                tokens.push(last);
            }
            None if tokens.len() > limit => {
                return Err(ApiError::context_exceeded(format!(
                    "input {i} is {} tokens; `{}` takes at most {limit} tokens per input. \
                     Shorten it, or set \"truncate_prompt_tokens\": -1 to cut it to {limit}.",
                    tokens.len(),
                    st.name
                )));
            }
            _ => {}
        }
        prompt_tokens += tokens.len() as u64;
        inputs.push(tokens);
    }
    let n = inputs.len();
    let queued = e.stats.pending_inputs.fetch_add(n, Ordering::Relaxed);
    // The queue bound counts inputs: a full batch per allowed waiting request.
    let cap = st
        .max_queue
        .saturating_mul(st.parallel)
        .max(crate::embed::MIN_QUEUED_INPUTS);
    if queued + n > cap && queued > 0 {
        e.stats.pending_inputs.fetch_sub(n, Ordering::Relaxed);
        return Err(ApiError::Overloaded(format!(
            "{queued} inputs are already waiting to be embedded; try again shortly"
        )));
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    if e.jobs
        .send(crate::embed::EmbedJob { inputs, reply: tx })
        .is_err()
    {
        e.stats.pending_inputs.fetch_sub(n, Ordering::Relaxed);
        return Err(ApiError::Unavailable("the engine is shutting down".into()));
    }
    let vectors = rx
        .await
        .map_err(|_| ApiError::Internal("the embedding loop stopped".into()))?
        .map_err(ApiError::Internal)?;
    Ok(axum::Json(aula_protocol::embeddings_response(
        &st.name,
        vectors,
        req.base64,
        prompt_tokens,
    ))
    .into_response())
}
