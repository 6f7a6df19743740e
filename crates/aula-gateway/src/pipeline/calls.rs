//! The calls the gateway makes itself on a user's behalf, typed: the chat
//! behind `/v1/responses` (whole, or as a stream of chunks), a vector
//! store's embeddings and token counts. Each is the user's own call — the
//! same validation, limits, fair queue and ledger as a request of theirs —
//! made from a typed request (turned into an object, never into text to be
//! parsed again) and read back into the wire types of `aula_protocol::wire`.
//!
//! An engine's refusal comes back as an [`ApiError`]: a 4xx is the
//! request's fault (400 with the engine's message), anything else the
//! engine's (502).

use super::{Gateway, Sent, call};
use crate::identity::Identity;
use aula_protocol::ApiError;
use aula_protocol::sse::SseReader;
use aula_protocol::wire::{
    ChatChunk, ChatCompletion, ChatRequest, EmbeddingList, EmbeddingsRequest, TokenizeRequest,
    Tokenized,
};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use http_body_util::BodyExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// A streamed chat answer, chunk by chunk; an error ends it. Dropping it
/// is the client leaving: the request is settled as cancelled.
pub type ChatEvents = BoxStream<'static, Result<ChatChunk, ApiError>>;

impl Gateway {
    /// A whole chat answer for `id`.
    pub async fn chat(
        self: &Arc<Self>,
        id: &Identity,
        mut req: ChatRequest,
    ) -> Result<ChatCompletion, ApiError> {
        req.stream = false;
        req.stream_options = None;
        whole(self, "/v1/chat/completions", id, &req).await
    }

    /// A chat answer for `id`, streamed (with its usage chunk).
    pub async fn chat_stream(
        self: &Arc<Self>,
        id: &Identity,
        req: ChatRequest,
    ) -> Result<ChatEvents, ApiError> {
        let req = req.streamed();
        let resp = call(
            self.clone(),
            "/v1/chat/completions",
            id,
            made(&req)?,
            Instant::now(),
        )
        .await?;
        if !resp.status().is_success() {
            let status = resp.status();
            return Err(refusal(status, &read(resp).await?));
        }
        Ok(chunks(resp))
    }

    /// `req.input`'s vectors, in input order.
    pub async fn embed(
        self: &Arc<Self>,
        id: &Identity,
        req: &EmbeddingsRequest,
    ) -> Result<Vec<Vec<f32>>, ApiError> {
        let list: EmbeddingList = whole(self, "/v1/embeddings", id, req).await?;
        list.into_vectors(req.input.len())
            .map_err(ApiError::BadGateway)
    }

    /// `req.content`'s tokens in the model's own tokenizer (an engine
    /// extension: an engine without it answers an error).
    pub async fn tokenize(
        self: &Arc<Self>,
        id: &Identity,
        req: &TokenizeRequest,
    ) -> Result<Tokenized, ApiError> {
        whole(self, "/tokenize", id, req).await
    }
}

/// A typed request as the object the pipeline validates.
fn made(req: &impl Serialize) -> Result<Sent, ApiError> {
    match serde_json::to_value(req) {
        Ok(Value::Object(o)) => Ok(Sent::Made(o)),
        Ok(_) => Err(ApiError::Internal("a request is not an object".into())),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

/// A whole (not streamed) call, its answer read as `T`.
async fn whole<T: DeserializeOwned>(
    st: &Arc<Gateway>,
    path: &'static str,
    id: &Identity,
    req: &impl Serialize,
) -> Result<T, ApiError> {
    let resp = call(st.clone(), path, id, made(req)?, Instant::now()).await?;
    let status = resp.status();
    let bytes = read(resp).await?;
    if !status.is_success() {
        return Err(refusal(status, &bytes));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::BadGateway(format!(
            "the engine's answer to {path} is not the API's: {e}"
        ))
    })
}

async fn read(resp: Response) -> Result<Bytes, ApiError> {
    Ok(resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::BadGateway(e.to_string()))?
        .to_bytes())
}

/// An OpenAI error body's message.
#[derive(serde::Deserialize)]
struct ErrorBody {
    error: ErrorMessage,
}

#[derive(serde::Deserialize)]
struct ErrorMessage {
    #[serde(default)]
    message: String,
}

/// An engine's (or the pipeline's) refusal as an error: 4xx the request's,
/// else the engine's.
fn refusal(status: StatusCode, bytes: &[u8]) -> ApiError {
    let message = match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(b) if !b.error.message.is_empty() => b.error.message,
        _ => format!("the engine refused the call ({status})"),
    };
    if status.is_client_error() {
        ApiError::invalid(message)
    } else {
        ApiError::BadGateway(message)
    }
}

/// The pipeline's streamed answer as chunks. An `error` event (an engine
/// that failed mid-answer) or a frame that is not a chunk ends it with an
/// error; `[DONE]` or the body's end ends it.
fn chunks(resp: Response) -> ChatEvents {
    struct Reading {
        body: axum::body::BodyDataStream,
        reader: SseReader,
        ready: VecDeque<Result<ChatChunk, ApiError>>,
        over: bool,
    }
    impl Reading {
        fn take(&mut self, ev: aula_protocol::sse::SseEvent) {
            if self.over || ev.data.is_empty() {
                return;
            }
            if ev.is_done() {
                self.over = true;
                return;
            }
            let item = match serde_json::from_slice::<ChatChunk>(&ev.data) {
                Ok(c) => Ok(c),
                Err(e) => Err(match serde_json::from_slice::<ErrorBody>(&ev.data) {
                    Ok(b) => ApiError::BadGateway(b.error.message),
                    Err(_) => ApiError::BadGateway(format!(
                        "the engine sent a frame that is not a chunk: {e}"
                    )),
                }),
            };
            self.over = item.is_err();
            self.ready.push_back(item);
        }
    }
    let state = Reading {
        body: resp.into_body().into_data_stream(),
        reader: SseReader::default(),
        ready: VecDeque::new(),
        over: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(item) = s.ready.pop_front() {
                return Some((item, s));
            }
            if s.over {
                return None;
            }
            match s.body.next().await {
                Some(Ok(bytes)) => {
                    for ev in s.reader.push(&bytes) {
                        s.take(ev);
                    }
                }
                Some(Err(e)) => {
                    s.ready.push_back(Err(ApiError::BadGateway(e.to_string())));
                    s.over = true;
                }
                None => {
                    if let Some(ev) = s.reader.finish() {
                        s.take(ev);
                    }
                    s.over = true;
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::body::Body;

    fn answer(frames: &[&str]) -> Response {
        let pieces: Vec<_> = frames
            .iter()
            .map(|f| Ok::<_, std::io::Error>(Bytes::from(f.to_string())))
            .collect();
        Response::new(Body::from_stream(futures::stream::iter(pieces)))
    }

    const CHUNK: &str = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#;

    #[tokio::test]
    async fn chunks_cut_anywhere_are_read_whole_and_done_ends_them() {
        let whole = format!("data: {CHUNK}\n\ndata: [DONE]\n\n");
        let (a, b) = whole.split_at(17);
        let got: Vec<_> = chunks(answer(&[a, b])).collect().await;
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].as_ref().unwrap().choices[0].delta.content.as_deref(),
            Some("Hi")
        );
    }

    #[tokio::test]
    async fn an_engine_error_mid_answer_ends_the_stream_with_it() {
        let frames = [
            "data: ",
            CHUNK,
            "\n\ndata: {\"error\":{\"message\":\"the engine stopped\",\"type\":\"server_error\"}}\n\n",
            "data: [DONE]\n\n",
        ];
        let got: Vec<_> = chunks(answer(&frames)).collect().await;
        assert_eq!(got.len(), 2);
        assert!(got[0].is_ok());
        let e = got[1].as_ref().unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        assert!(e.to_string().contains("the engine stopped"), "{e}");
        // A frame that is not a chunk is an error too, not skipped.
        let got: Vec<_> = chunks(answer(&["data: {\"x\":1}\n\n"])).collect().await;
        assert!(matches!(got.as_slice(), [Err(ApiError::BadGateway(_))]));
    }

    #[test]
    fn refusals_keep_the_engine_s_message() {
        let e = refusal(
            StatusCode::BAD_REQUEST,
            br#"{"error":{"message":"bad schema","type":"invalid_request_error"}}"#,
        );
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert!(e.to_string().contains("bad schema"));
        let e = refusal(StatusCode::INTERNAL_SERVER_ERROR, b"<html>");
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
    }
}
