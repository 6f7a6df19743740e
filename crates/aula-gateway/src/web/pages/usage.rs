//! `/usage`: usage by user, group or model (staff), or one's own (students), as a table or CSV.

use super::super::{Handle, Visitor, fields};
use super::*;
use aula_store::{UsageBy, UsageRow};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::context;

/// `/usage?by=user|group|model&period=day|week|term&sort=...&format=csv`:
/// everyone's for staff; a student's own, by model.
pub async fn usage(
    State(st): State<Handle>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let q = fields(q.unwrap_or_default().as_bytes());
    let v = page!(Visitor::of(&st, &headers).await);
    let id = page!(v.require(&st, "/usage")).clone();
    let staff = v.staff();
    let by_name = q
        .get("by")
        .map(String::as_str)
        .unwrap_or(if staff { "user" } else { "model" });
    let by: UsageBy = match by_name.parse() {
        Ok(b) if staff || b == UsageBy::Model => b,
        _ => UsageBy::Model,
    };
    let by_name = match by {
        UsageBy::User => "user",
        UsageBy::Group => "group",
        UsageBy::Model => "model",
    };
    let period = q
        .get("period")
        .map(String::as_str)
        .filter(|p| matches!(*p, "day" | "week" | "term"))
        .unwrap_or("day");
    let since = period_start(&st, period);
    let only = (!staff).then_some(id.name.as_str());
    let mut rows = match usage_for(&st, by, since, only).await {
        Ok(r) => r,
        Err(e) => {
            return v.error(
                &st,
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("The usage records cannot be read right now: {e}"),
            );
        }
    };
    let sort = q.get("sort").map(String::as_str).unwrap_or("tokens");
    sort_rows(&mut rows, sort);
    if q.get("format").map(String::as_str) == Some("csv") {
        let csv = aula_store::tables::Usage {
            by: by_name.into(),
            rows,
        }
        .to_csv();
        let resp = (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"aula-usage-{by_name}-{period}.csv\""),
                ),
            ],
            csv,
        )
            .into_response();
        return v.finish(&st, resp);
    }
    let total = rows.iter().fold((0, 0, 0), |t, r| {
        (
            t.0 + r.requests,
            t.1 + r.prompt_tokens,
            t.2 + r.completion_tokens,
        )
    });
    v.render(
        &st,
        StatusCode::OK,
        "usage.html",
        "usage",
        context! {
            title => "Usage",
            rows => rows,
            by => by_name,
            period => period,
            sort => sort,
            since => since,
            total => context! { requests => total.0, prompt => total.1, completion => total.2 },
        },
    )
}

fn sort_rows(rows: &mut [UsageRow], sort: &str) {
    match sort {
        "key" => rows.sort_by(|a, b| a.key.cmp(&b.key)),
        "requests" => rows.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.key.cmp(&b.key))),
        "ttft" => rows.sort_by(|a, b| b.mean_ttft_ms.total_cmp(&a.mean_ttft_ms)),
        _ => rows.sort_by(|a, b| {
            (b.prompt_tokens + b.completion_tokens)
                .cmp(&(a.prompt_tokens + a.completion_tokens))
                .then(a.key.cmp(&b.key))
        }),
    }
}
