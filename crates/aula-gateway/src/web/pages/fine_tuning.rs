//! `/fine-tuning`: jobs and fine-tuned models (read only).

use super::super::{Handle, Visitor};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use minijinja::context;

/// `/fine-tuning`: the visitor's jobs (teachers and admins: everyone's)
/// and the fine-tuned models they may use. Read only: jobs are started and
/// cancelled with the API.
pub async fn fine_tuning(State(st): State<Handle>, headers: HeaderMap) -> Response {
    let v = page!(Visitor::of(&st, &headers).await);
    let id = page!(v.require(&st, "/fine-tuning")).clone();
    let staff = crate::finetune::FineTune::is_staff(&id);
    let owner = (!staff).then_some(id.name.as_str());
    let jobs = st
        .gw
        .store
        .ft_jobs(owner, None, 100)
        .await
        .map(|(j, _)| j)
        .unwrap_or_default();
    let jobs: Vec<minijinja::Value> = jobs
        .iter()
        .map(|j| {
            let error_message = j
                .error
                .as_deref()
                .and_then(|e| serde_json::from_str::<serde_json::Value>(e).ok())
                .and_then(|e| e["message"].as_str().map(String::from));
            context! {
                id => j.id, owner => j.owner, base_model => j.base_model, status => j.status,
                created_ms => j.created_ms, trained_tokens => j.trained_tokens,
                fine_tuned_model => j.fine_tuned_model, deleted_ms => j.deleted_ms,
                error_message => error_message,
            }
        })
        .collect();
    let models: Vec<minijinja::Value> = st
        .finetune
        .models_for(&id)
        .into_iter()
        .map(|(name, t)| context! { name => name, base => t.base, owner => t.owner })
        .collect();
    v.render(
        &st,
        StatusCode::OK,
        "fine_tuning.html",
        "fine-tuning",
        context! {
            title => "Fine-tuning",
            jobs => jobs,
            models => models,
            enabled => st.finetune.enabled,
        },
    )
}
