//! `/plan`: the planner as a form (teachers and admins).

use super::super::{Handle, Visitor, fields};
use super::*;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use minijinja::context;

/// `/plan`: "can I run it" — the planner as a form (teachers and admins).
/// Models are the catalog's and the GGUFs in the model directory (never a
/// path typed into the form); hardware is the planner's profiles or this
/// machine.
pub async fn plan(State(st): State<Handle>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let v = page!(Visitor::of(&st, &headers).await);
    page!(v.require_staff(&st, "/plan"));
    let q = fields(q.unwrap_or_default().as_bytes());
    let catalog: Vec<String> = aula_planner::catalog::entries()
        .map(|e| e.into_iter().map(|e| e.id).collect())
        .unwrap_or_default();
    let dir = crate::home::models_dir();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".gguf"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let hardware: Vec<(String, String)> = aula_planner::hardware::profiles()
        .map(|p| p.into_iter().map(|h| (h.id, h.name)).collect())
        .unwrap_or_default();
    let get = |k: &str, d: &str| {
        q.get(k)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| d.to_string())
    };
    let form = context! {
        model => get("model", ""),
        hardware => get("hardware", "this"),
        engine => get("engine", "embedded"),
        precision => get("precision", ""),
        context => get("context", "4096"),
        users => get("users", "8"),
    };
    let result = if q.contains_key("model") {
        Some(plan_one(&q, &files, &dir))
    } else {
        None
    };
    let (estimate, text, error) = match result {
        Some(Ok((e, t))) => (Some(e), Some(t), None),
        Some(Err(e)) => (None, None, Some(e)),
        None => (None, None, None),
    };
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    v.render(
        &st,
        status,
        "plan.html",
        "plan",
        context! {
            title => "Can I run it?",
            catalog => catalog,
            files => files,
            hardware_profiles => hardware,
            form => form,
            estimate => estimate,
            text => text,
            error => error,
        },
    )
}

/// One estimate from the form's fields: (what the page draws, the text `aula plan` prints).
fn plan_one(
    q: &Fields,
    files: &[String],
    dir: &std::path::Path,
) -> Result<(minijinja::Value, String), String> {
    use aula_planner::estimate::{EngineKind, PlanRequest};
    use aula_planner::query::PlanQuery;
    let model = q.get("model").map(|s| s.trim()).unwrap_or("");
    let number = |k: &str, d: u32| -> Result<u32, String> {
        match q.get(k).map(|s| s.trim()).filter(|s| !s.is_empty()) {
            None => Ok(d),
            Some(s) => s
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=1_048_576).contains(n))
                .ok_or_else(|| format!("{k}: “{s}” is not a whole number from 1 to 1048576")),
        }
    };
    let context = number("context", 4096)?;
    let users = number("users", 8)?;
    let engine: EngineKind = q
        .get("engine")
        .map(String::as_str)
        .unwrap_or("embedded")
        .parse()?;
    let hw = match q.get("hardware").map(String::as_str) {
        // This machine: as `aula assess` measured it, else what the OS says.
        None | Some("" | "this") => match crate::home::assessment()? {
            Some(a) => a.hardware(),
            None => aula_fleet::host::detect(),
        },
        Some(h) => aula_planner::hardware::find(h)?,
    };
    let shape = if files.iter().any(|f| f == model) {
        aula_planner::resolve_model(&dir.join(model))?
    } else {
        aula_planner::catalog::find(model)?
    };
    let request = PlanQuery {
        request: PlanRequest {
            engine,
            context,
            users,
            ..PlanRequest::default()
        },
        precision: q.get("precision").cloned(),
    }
    .resolve(&shape)?;
    let e = aula_planner::estimate::estimate(&shape, &hw, &request);
    let m = &e.memory;
    let usable = m.usable_bytes.max(1) as f64;
    let pct = |b: u64| format!("{:.1}", (b as f64 * 100.0 / usable).min(100.0));
    let drawn = context! {
        verdict => e.verdict.reason.clone(),
        fits => m.left_bytes >= 0,
        weights => m.weights_bytes,
        kv => m.kv_cache_bytes,
        overhead => m.overhead_bytes,
        total => m.total_bytes,
        usable => m.usable_bytes,
        weights_pct => pct(m.weights_bytes),
        kv_pct => pct(m.kv_cache_bytes),
        overhead_pct => pct(m.overhead_bytes),
        kv_x => pct(m.weights_bytes),
        overhead_x => pct(m.weights_bytes + m.kv_cache_bytes),
        hardware => hw.name.clone(),
    };
    let summary = aula_planner::summary::PlanSummary {
        hardware: hw,
        estimates: vec![e],
        placement: None,
        finetune: None,
        offload: None,
        engine: q
            .get("engine")
            .cloned()
            .unwrap_or_else(|| "embedded".into()),
        context,
        users,
    };
    Ok((drawn, summary.to_text()))
}
