//! `/`: the box for staff, a student's own standing for students.

use super::super::{Handle, Visitor};
use super::*;
use crate::identity::Identity;
use crate::limits::{self};
use aula_protocol::admin::ModelState;
use aula_store::UsageBy;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use minijinja::context;

/// `/`: the box (teachers and admins), or the student's own standing.
pub async fn overview(State(st): State<Handle>, headers: HeaderMap) -> Response {
    let v = page!(Visitor::of(&st, &headers).await);
    let id = page!(v.require(&st, "/")).clone();
    if !v.staff() {
        return me(&st, &v, &id).await;
    }
    let models = st.gw.fleet.ps();
    let budget = st.gw.fleet.budget_bytes();
    let loaded = |s: &ModelState| matches!(s, ModelState::Ready | ModelState::Loading);
    let used: u64 = models
        .iter()
        .filter(|m| loaded(&m.state))
        .filter_map(|m| m.actual_bytes.or(m.planned_bytes))
        .sum();
    let known = budget != u64::MAX && budget > 0;
    let free = budget.saturating_sub(used);
    let pct = |b: u64| {
        if known {
            (b as f64 * 100.0 / budget as f64).min(100.0)
        } else {
            0.0
        }
    };
    let history = st.gw.live.history();
    let now = history.last().cloned().unwrap_or_default();
    let refused_minute: u64 = history
        .iter()
        .rev()
        .take(60)
        .flat_map(|s| s.refused.values())
        .sum();
    let queued_total: usize = now.queued.values().sum();
    let mut refusals: std::collections::BTreeMap<String, u64> = Default::default();
    for s in &history {
        for (k, n) in &s.refused {
            *refusals.entry(k.clone()).or_default() += n;
        }
    }
    let rows: Vec<_> = models
        .iter()
        .map(|m| {
            context! {
                model => m.model.clone(),
                engine => m.engine.as_str(),
                state => m.state.name(),
                reason => match &m.state { ModelState::Failed { reason } => Some(reason.clone()), _ => None },
                pinned => m.pinned,
                planned => m.planned_bytes,
                actual => m.actual_bytes,
                slots => m.slots,
                busy => m.busy,
                queued => m.queued,
                idle => m.idle_s.map(|s| format!("{s:.0} s")),
                loaded => loaded(&m.state),
            }
        })
        .collect();
    v.render(
        &st,
        StatusCode::OK,
        "overview.html",
        "home",
        context! {
            title => "The box",
            models => rows,
            budget_known => known,
            budget => budget,
            used => used,
            free => free,
            used_pct => format!("{:.1}", pct(used)),
            free_pct => format!("{:.1}", pct(free)),
            now => now,
            refused_minute => refused_minute,
            queued_total => queued_total,
            refusals => refusals,
            users => st.gw.limiter.in_flight().0,
        },
    )
}

/// A student's own standing: budgets with their resets, the other limits,
/// and usage by model this term.
async fn me(st: &Handle, v: &Visitor, id: &Identity) -> Response {
    let lim = limits::effective(&st.gw.limiter.rules(), id);
    let term = st.gw.limiter.term_start_ms();
    let budgets = budgets(st, id, &lim).await;
    let usage = usage_for(st, UsageBy::Model, term, Some(&id.name))
        .await
        .unwrap_or_default();
    v.render(
        st,
        StatusCode::OK,
        "me.html",
        "home",
        context! {
            title => "My usage",
            explained => limits::explain(&st.gw.limiter.rules(), id),
            budgets => budgets,
            lim => context! {
                requests_per_minute => lim.requests_per_minute,
                tokens_per_minute => lim.tokens_per_minute,
                concurrent_requests => lim.concurrent_requests,
                max_tokens => lim.max_tokens,
                models => lim.models.clone(),
            },
            models => st.gw.visible_models(id),
            usage => usage,
            groups => id.groups.clone(),
        },
    )
}
