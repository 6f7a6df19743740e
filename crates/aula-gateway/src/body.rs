//! Request bodies: read only after the caller is authenticated, bounded in
//! size and time. A body refused as too large is still read to its end —
//! dropped as it arrives, for at most [`DRAIN_FOR`] — before the refusal is
//! sent: a client still sending would otherwise see the connection closed
//! on it (a broken pipe) instead of the 413 (or 429) that says why. JSON
//! bodies are read here; uploads (`files.rs`) drain through their multipart
//! reader with the same bound.

use aula_protocol::ApiError;
use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The largest JSON request body accepted (OpenAI-style JSON; 2,048
/// embedding inputs of a few hundred characters fit).
pub const MAX_BODY_BYTES: usize = 2 << 20;
/// How long a client may take to send a JSON request body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest the rest of a refused body is read for.
pub const DRAIN_FOR: Duration = Duration::from_secs(60);
/// The longest a client may go without sending a byte of a body being read
/// or drained.
pub const IDLE: Duration = Duration::from_secs(30);

/// A JSON request body within [`BODY_TIMEOUT`] and [`MAX_BODY_BYTES`].
pub async fn read_json(body: Body) -> Result<Bytes, ApiError> {
    let mut stream = body.into_data_stream();
    let collect = async {
        // Most bodies come in one chunk: kept as it is, copied only when a
        // second one follows.
        let mut first: Option<Bytes> = None;
        let mut buf = BytesMut::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::invalid(format!("the request body could not be read: {e}"))
            })?;
            let held = first.as_ref().map_or(0, Bytes::len) + buf.len();
            if held + chunk.len() > MAX_BODY_BYTES {
                return Err(ApiError::PayloadTooLarge(format!(
                    "the request body is larger than {} MiB",
                    MAX_BODY_BYTES >> 20
                )));
            }
            match first.take() {
                None if buf.is_empty() => first = Some(chunk),
                held => {
                    if let Some(h) = held {
                        buf.extend_from_slice(&h);
                    }
                    buf.extend_from_slice(&chunk);
                }
            }
        }
        Ok(first.unwrap_or_else(|| buf.freeze()))
    };
    let result = match tokio::time::timeout(BODY_TIMEOUT, collect).await {
        Err(_) => Err(ApiError::RequestTimeout(format!(
            "the request body did not arrive within {} s",
            BODY_TIMEOUT.as_secs()
        ))),
        Ok(r) => r,
    };
    if let Err(ApiError::PayloadTooLarge(_)) = &result {
        drain(stream).await;
    }
    result
}

/// The most refused bodies drained at once, all users together: past it a
/// refusal is sent at once (and a client still sending may see the
/// connection closed), so refusals cannot hold an unbounded number of
/// connections open.
pub const MAX_DRAINS: usize = 64;
/// The most bytes read from one refused body before it is given up on.
pub const DRAIN_MAX_BYTES: usize = 64 << 20;

static DRAINING: AtomicUsize = AtomicUsize::new(0);

/// One of the [`MAX_DRAINS`] drains under way, returned when dropped.
pub struct DrainPermit(());

impl DrainPermit {
    /// A permit, or `None` when [`MAX_DRAINS`] bodies are being drained.
    pub fn try_take() -> Option<DrainPermit> {
        DRAINING
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_DRAINS).then_some(n + 1)
            })
            .ok()
            .map(|_| DrainPermit(()))
    }
}

impl Drop for DrainPermit {
    fn drop(&mut self) {
        DRAINING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Read and drop the rest of `stream`, for at most [`DRAIN_FOR`] (and
/// [`IDLE`] between chunks) and [`DRAIN_MAX_BYTES`]; not at all when
/// [`MAX_DRAINS`] are under way.
pub async fn drain<S, E>(mut stream: S)
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let Some(_permit) = DrainPermit::try_take() else {
        return;
    };
    let rest = async {
        let mut read = 0usize;
        while let Ok(Some(Ok(chunk))) = tokio::time::timeout(IDLE, stream.next()).await {
            read += chunk.len();
            if read > DRAIN_MAX_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_FOR, rest).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn too_large_is_refused_after_the_rest_is_read() {
        let read = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let r = read.clone();
        let chunks = (0..64).map(move |_| {
            r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, std::io::Error>(Bytes::from(vec![b'a'; 64 * 1024]))
        });
        let body = Body::from_stream(futures::stream::iter(chunks));
        let e = read_json(body).await.unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        // 4 MiB sent, every chunk read (not just the first 2 MiB).
        assert_eq!(read.load(std::sync::atomic::Ordering::SeqCst), 64);
        let ok = read_json(Body::from("{}")).await.unwrap();
        assert_eq!(&ok[..], b"{}");
    }
}
