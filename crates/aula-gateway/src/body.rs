//! Request bodies: read only after the caller is authenticated, bounded in
//! size and time. A body refused as too large is still read to its end —
//! dropped as it arrives, for at most [`DRAIN_FOR`] — before the refusal is
//! sent: a client still sending would otherwise see the connection closed
//! on it (a broken pipe) instead of the 413 (or 429) that says why. JSON
//! bodies are read here; uploads (`files/upload.rs`) drain through their multipart
//! reader with the same bounds.
//!
//! What a refused body costs the gateway is bounded: at most
//! [`DRAIN_MAX_BYTES`] of it are read, at most [`DRAIN_BYTES_PER_S`] (a
//! client pushing at loopback speed would otherwise cost a core), by at most
//! [`MAX_DRAINS`] drains at once; a body whose declared length is past
//! [`DRAIN_MAX_BYTES`] is not drained at all (it would not end within the
//! bound, so its client sees the connection closed either way).

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
    let declared = axum::body::HttpBody::size_hint(&body).exact();
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
        drain(stream, declared).await;
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
/// The fastest one refused body is read: past it the drain waits (the
/// client is held back by TCP). A refused body of the largest size that is
/// drained takes 2 s.
pub const DRAIN_BYTES_PER_S: f64 = (32 << 20) as f64;

/// How long a drain that has read `drained` bytes since `started` waits
/// before it reads more, to stay within [`DRAIN_BYTES_PER_S`].
pub fn drain_pause(drained: usize, started: tokio::time::Instant) -> Option<tokio::time::Instant> {
    let due = started + Duration::from_secs_f64(drained as f64 / DRAIN_BYTES_PER_S);
    (due > tokio::time::Instant::now()).then_some(due)
}

static DRAINING: AtomicUsize = AtomicUsize::new(0);

/// One of the [`MAX_DRAINS`] drains under way, returned when dropped.
pub struct DrainPermit(());

impl DrainPermit {
    /// A permit to drain a body of `declared` length (if it said), or `None`:
    /// when it is longer than [`DRAIN_MAX_BYTES`], or [`MAX_DRAINS`] bodies
    /// are being drained.
    pub fn try_take(declared: Option<u64>) -> Option<DrainPermit> {
        if declared.is_some_and(|n| n > DRAIN_MAX_BYTES as u64) {
            return None;
        }
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

/// Read and drop the rest of `stream` (a body of `declared` length, if it
/// said), for at most [`DRAIN_FOR`] (and [`IDLE`] between chunks),
/// [`DRAIN_MAX_BYTES`] and [`DRAIN_BYTES_PER_S`]; not at all when no
/// [`DrainPermit`] is to be had.
pub async fn drain<S, E>(mut stream: S, declared: Option<u64>)
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let Some(_permit) = DrainPermit::try_take(declared) else {
        return;
    };
    let rest = async {
        let started = tokio::time::Instant::now();
        let mut read = 0usize;
        while let Ok(Some(Ok(chunk))) = tokio::time::timeout(IDLE, stream.next()).await {
            read += chunk.len();
            if read > DRAIN_MAX_BYTES {
                break;
            }
            if let Some(due) = drain_pause(read, started) {
                tokio::time::sleep_until(due).await;
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

    fn counted(
        chunks: usize,
        size: usize,
    ) -> (
        impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
        std::sync::Arc<AtomicUsize>,
    ) {
        let read = std::sync::Arc::new(AtomicUsize::new(0));
        let r = read.clone();
        let s = futures::stream::iter((0..chunks).map(move |_| {
            r.fetch_add(1, Ordering::SeqCst);
            Ok(Bytes::from(vec![b'a'; size]))
        }));
        (s, read)
    }

    /// Issue 30: a body that says it is longer than the drain bound is not
    /// drained at all (it cannot end within it).
    #[tokio::test]
    async fn a_body_declared_past_the_bound_is_not_drained() {
        assert!(DrainPermit::try_take(Some(DRAIN_MAX_BYTES as u64 + 1)).is_none());
        let (s, read) = counted(16, 1024);
        drain(s, Some(1_000_000_000)).await;
        assert_eq!(read.load(Ordering::SeqCst), 0);
        let (s, read) = counted(16, 1024);
        drain(s, Some(16 * 1024)).await;
        assert_eq!(read.load(Ordering::SeqCst), 16);
    }

    /// Issue 30: a refused body is read no faster than DRAIN_BYTES_PER_S,
    /// however fast its client sends (a lower bound on the time taken: a
    /// busy machine only makes it longer).
    #[tokio::test]
    async fn a_drain_reads_no_faster_than_its_rate() {
        let (s, read) = counted(128, 64 * 1024);
        let t = std::time::Instant::now();
        drain(s, None).await;
        assert_eq!(read.load(Ordering::SeqCst), 128);
        let least = (128.0 * 64.0 * 1024.0 - 64.0 * 1024.0) / DRAIN_BYTES_PER_S;
        assert!(
            t.elapsed().as_secs_f64() >= least,
            "8 MiB drained in {:?}, under {least} s",
            t.elapsed()
        );
    }
}
