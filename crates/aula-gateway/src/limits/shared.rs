//! The counters on PostgreSQL, shared by every gateway of the database
//! (the rules are `aula_store::budgets`'s): concurrency, requests and
//! tokens per minute and the day, week and term budgets are windows in the
//! database, each request's holds a leased reservation.
//!
//! - Admission is one transaction; **if the database cannot be reached
//!   the request is refused (503, `database_unavailable`)**, never let
//!   through uncounted.
//! - Admission runs as a task of its own: a client that leaves while it
//!   waits for the database cannot leave a hold behind (a hold taken for a
//!   caller that is gone is settled at once, as unused).
//! - Settling runs in the background when the request ends; a settlement
//!   the database refused is kept and retried at every tick, so a blip
//!   loses no usage. A stopping gateway waits for its settlements
//!   ([`Shared::drain`]).
//! - Every tick ([`Shared::tick`], a third of the lease) renews this
//!   gateway's leases, and settles any gateway's expired reservations as
//!   fully used (a gateway killed mid-stream frees its holds within one
//!   lease). A reservation of this gateway's that no request holds (its
//!   admission gave up waiting for an answer that came later) is given
//!   back, unused: a live gateway never renews a stray hold for ever.
//! - The minute windows are calendar minutes here (one box counts a
//!   sliding minute): within a minute the limit is exact across gateways.

use super::{LimitFields, Period, Window, quota_refusal, tokens};
use aula_protocol::ApiError;
use aula_store::Store;
use aula_store::budgets::{Counter, Hold, Refusal};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

const MINUTE_MS: i64 = 60_000;

/// The lease when `[server] reservation_lease_seconds` is not set.
pub const DEFAULT_LEASE_MS: i64 = 15_000;

/// Reservations settled (or swept) per tick at most.
const SWEEP_BATCH: i64 = 200;

pub struct Shared {
    store: Store,
    gateway: String,
    lease_ms: i64,
    next: AtomicU64,
    /// Settlements the database did not take: (reservation, tokens used).
    pending: Mutex<Vec<(String, i64)>>,
    /// Admissions and settlements under way.
    tasks: tokio_util::task::TaskTracker,
    /// This gateway's reservations that a request holds or whose
    /// settlement is still to be written: from before admission asks the
    /// database until the settlement is written.
    live: Mutex<std::collections::HashSet<String>>,
}

impl Shared {
    pub fn new(store: Store, gateway: String, lease_ms: i64) -> Shared {
        Shared {
            store,
            gateway,
            lease_ms: lease_ms.max(1000),
            next: AtomicU64::new(0),
            pending: Mutex::new(Vec::new()),
            tasks: tokio_util::task::TaskTracker::new(),
            live: Mutex::new(std::collections::HashSet::new()),
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<(String, i64)>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait (at most `limit`) for the settlements under way: at shutdown,
    /// so that finished requests are not left to the sweep.
    pub async fn drain(&self, limit: std::time::Duration) {
        self.tasks.close();
        let _ = tokio::time::timeout(limit, self.tasks.wait()).await;
        let left = std::mem::take(&mut *self.pending());
        for (id, used) in left {
            let _ = aula_store::db::within(self.store.settle_budget(&id, Some(used))).await;
        }
    }

    pub fn lease_ms(&self) -> i64 {
        self.lease_ms
    }

    /// Hold what one request may use in every window a limit applies to.
    pub(super) async fn reserve(
        self: &std::sync::Arc<Self>,
        user: &str,
        lim: &LimitFields,
        reserve: i64,
        term_start_ms: i64,
        now_ms: i64,
    ) -> Result<Option<String>, ApiError> {
        let holds = holds(lim, reserve, term_start_ms, now_ms);
        if holds.is_empty() {
            return Ok(None);
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}/{n}", self.gateway);
        self.live().insert(id.clone());
        // A task of its own, so that the caller leaving cannot cut the
        // transaction's outcome off from its settlement.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let me = self.clone();
        let (rid, user) = (id.clone(), user.to_string());
        self.tasks.spawn(async move {
            let asked =
                me.store
                    .reserve_budget(&rid, &me.gateway, &user, &holds, now_ms + me.lease_ms);
            let got = aula_store::db::within(asked).await;
            if let Err(Ok(Ok(()))) = tx.send(got) {
                // Held for a caller that is gone: give it back, unused.
                me.settle(rid, 0);
            }
        });
        let got = rx
            .await
            .unwrap_or_else(|_| Err(aula_store::StoreError::Invalid("admission stopped".into())));
        match got {
            Ok(Ok(())) => Ok(Some(id)),
            Ok(Err(r)) => {
                self.live().remove(&id);
                Err(refusal(&r, now_ms))
            }
            Err(e) => {
                // Its transaction may still commit: then the tick finds it
                // held by nobody and gives it back.
                self.live().remove(&id);
                tracing::error!("admission could not reach the database: {e}");
                Err(unreachable())
            }
        }
    }

    /// Settle a reservation in the background (kept for the next tick if
    /// the database does not take it, or when there is no runtime).
    pub(super) fn settle(self: &std::sync::Arc<Self>, id: String, used: i64) {
        match tokio::runtime::Handle::try_current() {
            Ok(_) => {
                let me = self.clone();
                self.tasks.spawn(async move {
                    let settled = aula_store::db::within(me.store.settle_budget(&id, Some(used)));
                    match settled.await {
                        Ok(_) => {
                            me.live().remove(&id);
                        }
                        Err(e) => {
                            tracing::warn!("settling {id} failed (retried): {e}");
                            me.pending_push(id, used);
                        }
                    }
                });
            }
            Err(_) => self.pending_push(id, used),
        }
    }

    fn pending_push(&self, id: String, used: i64) {
        self.pending().push((id, used));
    }

    /// Retry settlements, renew this gateway's leases, settle expired
    /// reservations (any gateway's) as fully used, and forget old windows.
    /// Cancel-safe: a settlement leaves the list only once written.
    pub async fn tick(&self, now_ms: i64) -> Result<(), aula_store::StoreError> {
        let pending = self.pending().clone();
        for (id, used) in pending {
            self.store.settle_budget(&id, Some(used)).await?;
            self.pending().retain(|(p, _)| *p != id);
            self.live().remove(&id);
        }
        self.store
            .renew_budgets(&self.gateway, now_ms + self.lease_ms)
            .await?;
        // Read the database first: anything admitted after this is live.
        let mine = self.store.budget_ids_of(&self.gateway).await?;
        let strays: Vec<String> = {
            let live = self.live();
            mine.into_iter().filter(|id| !live.contains(id)).collect()
        };
        for id in strays {
            if self.store.settle_budget(&id, Some(0)).await? {
                tracing::warn!(
                    "reservation {id}: held by no request (its admission gave up); given back"
                );
            }
        }
        for id in self.store.expired_budgets(now_ms, SWEEP_BATCH).await? {
            if self.store.settle_budget(&id, None).await? {
                tracing::warn!(
                    "reservation {id}: its gateway stopped renewing it; charged in full"
                );
            }
        }
        let (_, week, _) = super::window_starts(now_ms, 0);
        self.store
            .forget_old_windows(now_ms - 2 * MINUTE_MS, week - 7 * super::DAY_MS)
            .await?;
        Ok(())
    }

    /// A user's (used, reserved) tokens today, this week and this term,
    /// across every gateway.
    pub(super) async fn usage_of(
        &self,
        user: &str,
        term_start_ms: i64,
        now_ms: i64,
    ) -> Result<[(i64, i64); 3], aula_store::StoreError> {
        let (day, week, term) = super::window_starts(now_ms, term_start_ms);
        aula_store::db::within(async {
            Ok([
                self.store.budget_window(user, Counter::Day, day).await?,
                self.store.budget_window(user, Counter::Week, week).await?,
                self.store.budget_window(user, Counter::Term, term).await?,
            ])
        })
        .await
    }
}

/// The 503 of a gateway that cannot count: fail closed.
fn unreachable() -> ApiError {
    ApiError::StateUnavailable(
        "the gateway cannot reach its database to count this request against your limits; try again shortly".into(),
    )
}

/// The windows a request takes from, for the limits that apply.
fn holds(lim: &LimitFields, reserve: i64, term_start_ms: i64, now_ms: i64) -> Vec<Hold> {
    let minute = now_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
    let (day, week, term) = super::window_starts(now_ms, term_start_ms);
    [
        (Counter::Active, lim.concurrent_requests, 0, 1),
        (Counter::MinuteRequests, lim.requests_per_minute, minute, 1),
        (
            Counter::MinuteTokens,
            lim.tokens_per_minute,
            minute,
            reserve,
        ),
        (Counter::Day, lim.tokens_per_day, day, reserve),
        (Counter::Week, lim.tokens_per_week, week, reserve),
        (Counter::Term, lim.tokens_per_term, term, reserve),
    ]
    .into_iter()
    .filter_map(|(counter, limit, start_ms, amount)| {
        Some(Hold {
            counter,
            start_ms,
            limit: tokens(limit?),
            amount,
        })
    })
    .collect()
}

/// The same refusals as one box gives, from the window that had no room.
fn refusal(r: &Refusal, now_ms: i64) -> ApiError {
    let h = &r.hold;
    let limit = u64::try_from(h.limit).unwrap_or(0);
    let retry = (((h.start_ms + MINUTE_MS - now_ms).max(0) as u64).div_ceil(1000)).max(1);
    let period = |p| {
        quota_refusal(
            p,
            &Window {
                start_ms: h.start_ms,
                used: r.used,
                reserved: r.reserved,
            },
            limit,
            h.amount,
        )
    };
    match h.counter {
        Counter::Active => ApiError::RateLimited {
            message: format!(
                "you already have {} requests running or waiting; the limit is {limit}",
                r.reserved
            ),
            code: "concurrency_limit",
            retry_after_s: 1,
        },
        Counter::MinuteRequests => ApiError::RateLimited {
            message: format!("you may send {limit} requests per minute"),
            code: "rate_limit_requests",
            retry_after_s: retry,
        },
        Counter::MinuteTokens => ApiError::RateLimited {
            message: format!(
                "you may use {limit} tokens per minute; {} are used or reserved and this request may need {}",
                r.used.saturating_add(r.reserved),
                h.amount
            ),
            code: "rate_limit_tokens",
            retry_after_s: retry,
        },
        Counter::Day => period(Period::Day),
        Counter::Week => period(Period::Week),
        Counter::Term => period(Period::Term),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller that leaves while its admission waits for the database
    /// leaves no hold behind: the admission runs to its end in a task of
    /// its own (its request counted in the minute, as on one box) and what
    /// it took is given back at once, so a commit whose answer the caller
    /// never saw cannot leave a hold. The same statements run on SQLite.
    #[tokio::test]
    async fn a_caller_that_leaves_during_admission_leaves_no_hold() {
        let dir = std::env::temp_dir().join(format!("aula-shared-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open_in(&dir).await.unwrap();
        let shared = std::sync::Arc::new(Shared::new(store.clone(), "g".into(), 15_000));
        let lim = LimitFields {
            concurrent_requests: Some(1),
            requests_per_minute: Some(10),
            tokens_per_day: Some(1000),
            ..Default::default()
        };
        // Polled once (the admission task is spawned, and cannot have run:
        // this runtime has one thread, and it is here), then dropped.
        let gone = futures::FutureExt::now_or_never(shared.reserve("u", &lim, 100, 0, 1000));
        assert!(
            gone.is_none(),
            "the admission cannot have finished unpolled"
        );
        shared.drain(std::time::Duration::from_secs(30)).await;
        assert_eq!(store.budget_holds().await.unwrap(), (0, 0));
        assert_eq!(
            store.budget_window("u", Counter::Day, 0).await.unwrap(),
            (0, 0)
        );
        assert_eq!(
            store.budget_window("u", Counter::Active, 0).await.unwrap(),
            (0, 0)
        );
        // It ran to its end (a request in the minute), not rolled back.
        assert_eq!(
            store
                .budget_window("u", Counter::MinuteRequests, 0)
                .await
                .unwrap(),
            (1, 0)
        );
        // A caller that stays holds its reservation.
        let held = shared.reserve("u", &lim, 100, 0, 1000).await.unwrap();
        assert!(held.is_some());
        assert_eq!(store.budget_holds().await.unwrap().0, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A hold of this gateway's that no request holds (its admission gave
    /// up before the database answered, and the answer came later) is
    /// given back at the next tick, not renewed for ever; the holds of
    /// requests still running are kept.
    #[tokio::test]
    async fn a_stray_hold_is_given_back_at_the_next_tick() {
        let dir = std::env::temp_dir().join(format!("aula-shared-stray-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open_in(&dir).await.unwrap();
        let shared = std::sync::Arc::new(Shared::new(store.clone(), "g".into(), 15_000));
        let lim = LimitFields {
            concurrent_requests: Some(5),
            ..Default::default()
        };
        let running = shared.reserve("u", &lim, 1, 0, 1000).await.unwrap();
        assert!(running.is_some());
        // A late commit of an admission that gave up.
        let active = Hold {
            counter: Counter::Active,
            start_ms: 0,
            limit: 5,
            amount: 1,
        };
        assert_eq!(
            store
                .reserve_budget("g/late", "g", "u", &[active], 1_000_000)
                .await
                .unwrap(),
            Ok(())
        );
        assert_eq!(
            store.budget_window("u", Counter::Active, 0).await.unwrap(),
            (0, 2)
        );
        shared.tick(1000).await.unwrap();
        assert_eq!(
            store.budget_window("u", Counter::Active, 0).await.unwrap(),
            (0, 1)
        );
        assert_eq!(
            store.budget_ids_of("g").await.unwrap(),
            vec![running.unwrap()]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn holds_follow_the_limits_and_refusals_match_one_box() {
        let lim = LimitFields {
            concurrent_requests: Some(2),
            tokens_per_day: Some(1000),
            requests_per_minute: Some(5),
            ..Default::default()
        };
        let now = 86_400_000 + 90_000;
        let h = holds(&lim, 300, 0, now);
        let got: Vec<_> = h
            .iter()
            .map(|h| (h.counter, h.start_ms, h.limit, h.amount))
            .collect();
        assert_eq!(
            got,
            vec![
                (Counter::Active, 0, 2, 1),
                (Counter::MinuteRequests, 86_400_000 + 60_000, 5, 1),
                (Counter::Day, 86_400_000, 1000, 300),
            ]
        );
        let e = refusal(
            &Refusal {
                hold: h[2],
                used: 800,
                reserved: 0,
            },
            now,
        );
        assert_eq!(e.body()["error"]["code"], "quota_tokens_day");
        assert_eq!(e.body()["error"]["resets_at"], 2 * 86_400);
        let e = refusal(
            &Refusal {
                hold: h[1],
                used: 5,
                reserved: 0,
            },
            now,
        );
        assert_eq!(e.body()["error"]["retry_after_seconds"], 30);
        assert!(holds(&LimitFields::default(), 300, 0, now).is_empty());
        assert_eq!(unreachable().status().as_u16(), 503);
        assert_eq!(unreachable().code(), Some("database_unavailable"));
    }
}
