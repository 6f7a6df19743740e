//! The HTTP handlers of `/v1/fine_tuning/jobs` (OpenAI's shapes) and
//! `DELETE /v1/models/{model}` for fine-tuned models. Everything a job
//! needs is checked here, before it is stored: the base, the files, the
//! hyperparameters, the caller's limits and the job's memory.

use super::worker::event;
use super::{FineTune, Handle};
use crate::auth::Caller;
use crate::files::store_error;
use crate::identity::Identity;
use aula_protocol::ApiError;
use aula_store::{FineTuneJob, JobStatus, now_ms};
use axum::Json;
use axum::extract::{Path, RawQuery, State};

mod create;
mod wire;

pub use create::*;
pub use wire::*;

type Answer = Result<axum::response::Response, ApiError>;

/// A typed object as a handler's answer.
fn ok(x: impl serde::Serialize) -> Answer {
    Ok(axum::response::IntoResponse::into_response(Json(x)))
}

/// A job as OpenAI's API shows it, with Aula's own settings under `aula`.
pub fn job_object(j: &FineTuneJob) -> FineTuningJob {
    FineTuningJob::from(j)
}

fn enabled(st: &Handle) -> Result<(), ApiError> {
    if st.finetune.enabled {
        return Ok(());
    }
    Err(ApiError::InvalidRequest {
        message: format!(
            "fine-tuning is not enabled on this gateway (no trainer at {} when it started: an admin runs `bash scripts/setup-trainer.sh` or sets [fine_tuning] python, and restarts it)",
            st.finetune.settings.python().display()
        ),
        param: None,
        code: Some("fine_tuning_disabled"),
    })
}

/// `after` and `limit` (1 to 100, default 20) and nothing else.
fn page(q: Option<&str>) -> Result<(Option<String>, i64), ApiError> {
    let p = crate::page::Page::parse(
        q,
        &crate::page::Takes {
            keys: &["after", "limit"],
            default_limit: 20,
            max_limit: 100,
        },
    )?;
    Ok((p.after, p.limit as i64))
}

/// `GET /v1/fine_tuning/jobs`: the caller's jobs (teachers and admins: everyone's), newest first.
pub async fn list(State(st): State<Handle>, Caller(id): Caller, RawQuery(q): RawQuery) -> Answer {
    let (after, limit) = page(q.as_deref())?;
    let owner = (!FineTune::is_staff(&id)).then_some(id.name.as_str());
    let (jobs, more) = st
        .gw
        .store
        .ft_jobs(owner, after.as_deref(), limit)
        .await
        .map_err(store_error)?;
    ok(crate::wire::List::of(
        jobs.iter().map(job_object).collect(),
        more,
        |j| &j.id,
    ))
}

/// The job as `id` may see it (theirs, or anyone's for staff); 404 otherwise.
async fn visible(st: &Handle, id: &Identity, job_id: &str) -> Result<FineTuneJob, ApiError> {
    match st.gw.store.ft_job(job_id).await.map_err(store_error)? {
        Some(j) if j.owner == id.name || FineTune::is_staff(id) => Ok(j),
        _ => Err(ApiError::NotFound(format!("no fine-tuning job `{job_id}`"))),
    }
}

/// `GET /v1/fine_tuning/jobs/{id}`.
pub async fn retrieve(
    State(st): State<Handle>,
    Caller(id): Caller,
    Path(job_id): Path<String>,
) -> Answer {
    ok(job_object(&visible(&st, &id, &job_id).await?))
}

/// `POST /v1/fine_tuning/jobs/{id}/cancel`: a job waiting or training stops
/// (its trainer killed, its memory given back) before this answers.
pub async fn cancel(
    State(st): State<Handle>,
    Caller(id): Caller,
    Path(job_id): Path<String>,
) -> Answer {
    let mut j = visible(&st, &id, &job_id).await?;
    if j.status.is_finished() {
        return Err(ApiError::invalid(format!(
            "the job `{job_id}` is {} already; only a job waiting or training can be cancelled",
            j.status
        )));
    }
    j.status = JobStatus::Cancelled;
    j.finished_ms = Some(now_ms());
    j.estimated_finish_ms = None;
    if !st
        .gw
        .store
        .update_ft_job(&j, &JobStatus::UNFINISHED)
        .await
        .map_err(store_error)?
    {
        // It ended meanwhile.
        return ok(job_object(&visible(&st, &id, &job_id).await?));
    }
    event(
        &st,
        &job_id,
        "info",
        &format!("The job was cancelled by {}.", id.name),
    )
    .await;
    let token = st
        .finetune
        .active
        .lock()
        .ok()
        .and_then(|a| a.get(&job_id).cloned());
    if let Some(t) = token {
        t.cancel();
        // Wait (bounded) until the worker let go of it: trainer gone, memory back.
        for _ in 0..100 {
            let gone = st
                .finetune
                .active
                .lock()
                .map(|a| !a.contains_key(&job_id))
                .unwrap_or(true);
            if gone {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    st.finetune.wake.notify_one();
    ok(job_object(&j))
}

/// `GET /v1/fine_tuning/jobs/{id}/events`: newest first.
pub async fn events(
    State(st): State<Handle>,
    Caller(id): Caller,
    Path(job_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Answer {
    let (after, limit) = page(q.as_deref())?;
    visible(&st, &id, &job_id).await?;
    // `after` is an event id: ftevent-<job>-<n>.
    let after = match after {
        None => None,
        Some(a) => Some(
            a.rsplit('-')
                .next()
                .and_then(|n| n.parse::<i64>().ok())
                .ok_or_else(|| ApiError::invalid_param("after", "`after` must be an event id"))?,
        ),
    };
    let (evs, more) = st
        .gw
        .store
        .ft_events(&job_id, after, limit)
        .await
        .map_err(store_error)?;
    ok(EventList {
        object: "list",
        data: evs.iter().map(|e| JobEvent::of(&job_id, e)).collect(),
        has_more: more,
    })
}

/// `GET /v1/fine_tuning/jobs/{id}/checkpoints`: newest first.
pub async fn checkpoints(
    State(st): State<Handle>,
    Caller(id): Caller,
    Path(job_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Answer {
    let (after, limit) = page(q.as_deref())?;
    let j = visible(&st, &id, &job_id).await?;
    let (cks, more) = st
        .gw
        .store
        .ft_checkpoints(&job_id, after.as_deref(), limit)
        .await
        .map_err(store_error)?;
    let data = cks.iter().map(|c| Checkpoint::of(&j, c)).collect();
    ok(crate::wire::List::of(data, more, |c: &Checkpoint| &c.id))
}

/// `DELETE /v1/models/{model}`: a fine-tuned model, by its owner or staff;
/// its adapter goes, its job stays (with the model's name).
pub async fn delete_model(
    State(st): State<Handle>,
    Caller(id): Caller,
    Path(model): Path<String>,
) -> Answer {
    let staff = FineTune::is_staff(&id);
    let Some(t) = st
        .finetune
        .model(&model)
        .filter(|t| staff || t.visible_to(&id))
    else {
        return Err(ApiError::ModelNotFound(format!(
            "no fine-tuned model `{model}` of yours"
        )));
    };
    if t.owner != id.name && !staff {
        return Err(ApiError::Forbidden {
            message: format!(
                "the model `{model}` is shared with you; only its owner or a teacher may delete it"
            ),
            code: "read_only",
            resets_at: None,
        });
    }
    let Some(mut j) = st.gw.store.ft_job(&t.job_id).await.map_err(store_error)? else {
        return Err(ApiError::ModelNotFound(format!(
            "no fine-tuned model `{model}`"
        )));
    };
    j.deleted_ms = Some(now_ms());
    st.gw
        .store
        .update_ft_job(&j, &[JobStatus::Succeeded])
        .await
        .map_err(store_error)?;
    st.finetune.unpublish(&model);
    super::worker::remove_adapter(&st, &t.base, &model).await;
    let _ = std::fs::remove_dir_all(st.finetune.settings.dir.join(&t.job_id));
    event(
        &st,
        &t.job_id,
        "info",
        &format!("The model {model} was deleted by {}.", id.name),
    )
    .await;
    ok(crate::wire::Deleted {
        id: model,
        object: "model",
        deleted: true,
    })
}
