//! The pages and their actions, one file a page. Each handler starts with
//! [`Visitor::of`] and its role check; a student's pages query only the
//! student's own rows. Here: what several pages share.

use super::Handle;
use crate::identity::Identity;
use crate::limits::{self, LimitFields};
use serde::Serialize;
use std::collections::HashMap;

mod events;
mod fine_tuning;
mod keys;
mod models;
mod overview;
mod plan;
mod playground;
mod usage;
mod users;

pub use events::*;
pub use fine_tuning::*;
pub use keys::*;
pub use models::*;
pub use overview::*;
pub use plan::*;
pub use playground::*;
pub use usage::*;
pub use users::*;

type Fields = HashMap<String, String>;

const DAY_MS: i64 = 86_400_000;

/// One token budget as the student's page shows it.
#[derive(Serialize)]
struct Budget {
    window: &'static str,
    limit: i64,
    used: i64,
    reserved: i64,
    remaining: i64,
    percent: i64,
    near: bool,
    resets: Option<i64>,
}

/// Usage from the ledger with every answered request in it: the ledger
/// is flushed first (otherwise a request reaches the database within
/// 50 ms of its end).
async fn usage_for(
    st: &Handle,
    by: aula_store::UsageBy,
    since: i64,
    only: Option<&str>,
) -> Result<Vec<aula_store::UsageRow>, aula_store::StoreError> {
    if let Err(e) = st.gw.ledger.flush().await {
        tracing::debug!("usage read before the ledger's last rows are in: {e}");
    }
    st.gw.store.usage_for(by, since, only).await
}

async fn budgets(st: &Handle, id: &Identity, lim: &LimitFields) -> Vec<Budget> {
    let now = aula_store::now_ms();
    let (day, week, _) = limits::window_starts(now, st.gw.limiter.term_start_ms());
    let usage = st.gw.limiter.usage(&id.name).await;
    [
        ("day", lim.tokens_per_day, Some(day + DAY_MS)),
        ("week", lim.tokens_per_week, Some(week + 7 * DAY_MS)),
        ("term", lim.tokens_per_term, None),
    ]
    .into_iter()
    .enumerate()
    .filter_map(|(i, (window, limit, resets))| {
        let limit = i64::try_from(limit?).unwrap_or(i64::MAX);
        let (used, reserved) = usage[i];
        let percent = if limit > 0 {
            ((used + reserved) as f64 * 100.0 / limit as f64).round() as i64
        } else {
            100
        };
        Some(Budget {
            window,
            limit,
            used,
            reserved,
            remaining: (limit - used - reserved).max(0),
            percent: percent.min(100),
            near: percent >= 80,
            resets,
        })
    })
    .collect()
}

fn period_start(st: &Handle, period: &str) -> i64 {
    let (day, week, term) =
        limits::window_starts(aula_store::now_ms(), st.gw.limiter.term_start_ms());
    match period {
        "day" => day,
        "week" => week,
        _ => term,
    }
}
