//! `/events`: the live figures, as server-sent events (staff).

use super::super::{Handle, Visitor};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

/// `/events`: the live samples (server-sent events), staff only: first the
/// last 15 minutes (`history`), then one sample a second.
pub async fn events(State(st): State<Handle>, headers: HeaderMap) -> Response {
    let v = page!(Visitor::of(&st, &headers).await);
    if v.id.is_none() || !v.staff() {
        return v.error(
            &st,
            StatusCode::FORBIDDEN,
            "Only teachers and admins may see the live view.",
        );
    }
    let history = serde_json::to_string(&st.gw.live.history()).unwrap_or_else(|_| "[]".into());
    let first = futures::stream::once(async move {
        Ok::<_, std::convert::Infallible>(Event::default().event("history").data(history))
    });
    let rx = st.gw.live.subscribe();
    let next = futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        let s = rx.borrow_and_update().clone();
        let e = Event::default()
            .event("sample")
            .data(serde_json::to_string(&*s).unwrap_or_default());
        Some((Ok(e), rx))
    });
    // Ends when the gateway starts shutting down (it would otherwise hold
    // the shutdown for its 30 s grace).
    let closing = st.gw.closing.clone().cancelled_owned();
    Sse::new(first.chain(next).take_until(closing))
        .keep_alive(KeepAlive::default())
        .into_response()
}
