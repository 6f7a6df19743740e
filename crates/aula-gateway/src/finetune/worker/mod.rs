//! The fine-tuning queue: validate new jobs, start queued ones oldest first
//! while fewer than `max_running` train, hold each job's memory in the
//! fleet's budget, run its trainer, turn the trainer's JSON lines into
//! events and checkpoints, and publish the adapter as a model.

use super::{FineTune, Handle, Tuned, validate};
use aula_store::{FineTuneJob, JobStatus, now_ms};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

mod trainer;

use trainer::*;

/// Aula's trainer, written next to the jobs at their start (so that an
/// installed `aula` needs no checkout).
const TRAINER: &str = include_str!("../../../../../trainer/aula_train.py");

/// The most memory a trainer may map for its data (`RLIMIT_DATA`: heap and
/// private writable mappings, not its code or the GGUF it maps read-only):
/// twice the plan's estimate of its peak plus this, so that an estimate
/// that is off, or a trainer that runs away, fails the job instead of
/// taking the box's memory from the engines.
pub const TRAINER_MEMORY_HEADROOM: u64 = 4_000_000_000;

/// The data limit of a trainer whose job the plan sized at `planned` bytes.
pub fn trainer_memory_limit(planned: u64) -> u64 {
    planned
        .saturating_mul(2)
        .saturating_add(TRAINER_MEMORY_HEADROOM)
}

/// A job's settings, resolved, as stored in `spec`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Spec {
    pub training_file: String,
    pub validation_file: Option<String>,
    pub suffix: Option<String>,
    pub seed: i64,
    pub n_epochs: u32,
    pub batch_size: u32,
    pub learning_rate_multiplier: f64,
    pub lora_rank: u32,
    pub lora_alpha: f64,
    /// Groups the resulting model is shared with.
    #[serde(default)]
    pub shared_with_groups: Vec<String>,
    /// Examples in the training file (from validation).
    #[serde(default)]
    pub examples: usize,
    /// Tokens per example the trainer keeps.
    #[serde(default)]
    pub max_tokens: u32,
    /// Where and how it trains (jobs stored before this: the CPU, f32).
    #[serde(default)]
    pub placement: super::device::Placement,
}

/// The learning rate a multiplier of 1 stands for (LoRA on small models).
pub const BASE_LEARNING_RATE: f64 = 5e-4;

pub fn start(st: &Handle, tasks: &aula_fleet::tasks::Tasks) {
    tasks.spawn("fine-tuning", run(st.clone()));
}

async fn run(st: Handle) {
    recover(&st).await;
    let permits = Arc::new(tokio::sync::Semaphore::new(
        st.finetune.settings.max_running.max(1),
    ));
    loop {
        // Several gateways: the jobs of one that died go back to the queue.
        if st.gw.store.is_postgres() {
            requeue_orphans(&st).await;
        }
        if let Ok(jobs) = st.gw.store.ft_jobs_in(&[JobStatus::ValidatingFiles]).await {
            for job in jobs {
                check_files(&st, job).await;
            }
        }
        if let Ok(mut jobs) = st.gw.store.ft_jobs_in(&[JobStatus::Queued]).await {
            // Fair between users: owners with fewer jobs training go first,
            // then the oldest job.
            let mut training: std::collections::HashMap<String, usize> =
                std::collections::HashMap::new();
            for j in st
                .gw
                .store
                .ft_jobs_in(&[JobStatus::Running])
                .await
                .unwrap_or_default()
            {
                *training.entry(j.owner).or_default() += 1;
            }
            jobs.sort_by_key(|j| (training.get(&j.owner).copied().unwrap_or(0), j.created_ms));
            for job in jobs {
                if active(&st.finetune).contains(&job.id) {
                    continue;
                }
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    break;
                };
                let token = CancellationToken::new();
                if let Ok(mut a) = st.finetune.active.lock() {
                    a.insert(job.id.clone(), token.clone());
                }
                let st2 = st.clone();
                tokio::spawn(async move {
                    let id = job.id.clone();
                    run_job(&st2, job, token).await;
                    if let Ok(mut a) = st2.finetune.active.lock() {
                        a.remove(&id);
                    }
                    drop(permit);
                    st2.finetune.wake.notify_one();
                });
            }
        }
        tokio::select! {
            _ = st.finetune.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = st.gw.closing.cancelled() => return,
        }
    }
}

fn active(ft: &FineTune) -> Vec<String> {
    ft.active
        .lock()
        .map(|a| a.keys().cloned().collect())
        .unwrap_or_default()
}

/// Put back in the queue the jobs marked running by a gateway that is no
/// longer in the database's list of gateways (this one's earlier life, or
/// another that died). A job's trainer resumes from its last checkpoint on
/// the machine that wrote it; another gateway's machine starts it over.
async fn requeue_orphans(st: &Handle) {
    let alive: Vec<String> = match st.gw.store.gateways(now_ms()).await {
        Ok(rows) => rows.into_iter().map(|g| g.id).collect(),
        Err(e) => {
            tracing::warn!("cannot read the list of gateways: {e}");
            return;
        }
    };
    let alive = [alive, vec![st.finetune.settings.gateway.clone()]].concat();
    match st.gw.store.requeue_orphaned_ft_jobs(&alive).await {
        Ok(ids) => {
            for id in ids {
                event(
                    st,
                    &id,
                    "warn",
                    "The gateway that trained this job stopped; it is queued again and resumes from its last checkpoint.",
                )
                .await;
            }
        }
        Err(e) => tracing::warn!("cannot put orphaned fine-tuning jobs back in the queue: {e}"),
    }
}

/// At start: publish the models made before, and put jobs that were
/// training when their gateway stopped back in the queue (their trainer
/// resumes from the last checkpoint).
async fn recover(st: &Handle) {
    match st.gw.store.ft_models().await {
        Ok(jobs) => {
            for j in jobs {
                if let Some(name) = &j.fine_tuned_model {
                    if !st.finetune.bases.contains_key(&j.base_model) {
                        tracing::warn!(
                            "fine-tuned model {name}: its base `{}` is not configured; not served",
                            j.base_model
                        );
                        continue;
                    }
                    if !st.finetune.adapter_path(&j.base_model, name).exists() {
                        tracing::warn!(
                            "fine-tuned model {name}: its adapter file is missing; not served"
                        );
                        continue;
                    }
                    st.finetune.publish(name, tuned(&j));
                }
            }
        }
        Err(e) => tracing::warn!("fine-tuned models cannot be read: {e}"),
    }
    for base in st.finetune.bases.keys() {
        st.gw
            .fleet
            .set_extra_bytes(base, st.finetune.adapter_bytes(base));
    }
    requeue_orphans(st).await;
}

/// "the CPU (LoRA, f32)", "the GPU (QLoRA: NF4 base, bf16, gradient checkpointing)".
pub(crate) fn describe(p: &super::device::Placement) -> String {
    use super::device::{Device, Precision};
    let device = match p.device {
        Device::Cpu => "the CPU",
        Device::Cuda => "the GPU",
    };
    let precision = match p.precision {
        Precision::F32 => "f32",
        Precision::Bf16 => "bf16",
    };
    let method = if p.qlora {
        format!("QLoRA: NF4 base, {precision}")
    } else {
        format!("LoRA, {precision}")
    };
    let ckpt = if p.gradient_checkpointing {
        ", gradient checkpointing"
    } else {
        ""
    };
    format!("{device} ({method}{ckpt})")
}

pub(crate) fn tuned(j: &FineTuneJob) -> Tuned {
    Tuned {
        job_id: j.id.clone(),
        owner: j.owner.clone(),
        base: j.base_model.clone(),
        shared_groups: serde_json::from_str(&j.shared_groups).unwrap_or_default(),
        created_ms: j.finished_ms.unwrap_or(j.created_ms),
    }
}

pub(crate) async fn event(st: &Handle, job: &str, level: &str, message: &str) {
    event_with(st, job, level, "message", message, None).await
}

/// An event of type `kind` (`message` or `metrics`), with its data.
pub(crate) async fn event_with(
    st: &Handle,
    job: &str,
    level: &str,
    kind: &str,
    message: &str,
    data: Option<serde_json::Value>,
) {
    let data = data.map(|d| d.to_string());
    if let Err(e) = st
        .gw
        .store
        .add_ft_event(job, level, kind, message, data.as_deref())
        .await
    {
        tracing::warn!("fine-tuning job {job}: an event was not recorded: {e}");
    }
}

/// Write `j` while its status is one of `expect`, retrying a failing
/// database (locked, briefly unreachable) for about 10 s: Some(false) when
/// the status had moved, None when the database kept failing.
pub(crate) async fn update(st: &Handle, j: &FineTuneJob, expect: &[JobStatus]) -> Option<bool> {
    update_if(st, j, expect, None).await
}

/// [`update`], only while this gateway trains the job.
async fn update_mine(st: &Handle, j: &FineTuneJob, expect: &[JobStatus]) -> Option<bool> {
    update_if(st, j, expect, Some(&st.finetune.settings.gateway)).await
}

async fn update_if(
    st: &Handle,
    j: &FineTuneJob,
    expect: &[JobStatus],
    mine: Option<&str>,
) -> Option<bool> {
    for attempt in 0..20 {
        let written = match mine {
            Some(g) => st.gw.store.update_ft_job_by(j, expect, g).await,
            None => st.gw.store.update_ft_job(j, expect).await,
        };
        match written {
            Ok(moved) => return Some(moved),
            Err(e) => {
                if attempt == 0 {
                    tracing::warn!(job = %j.id, "the job's status cannot be written yet: {e}");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    None
}

/// Fail a job (from any unfinished status) with `code` and `message`.
/// Its working files go (the trainer's log stays in the logs directory).
pub(crate) async fn fail(
    st: &Handle,
    mut j: FineTuneJob,
    code: &str,
    message: &str,
    param: Option<&str>,
) {
    j.status = JobStatus::Failed;
    j.error = Some(json!({"code": code, "message": message, "param": param}).to_string());
    j.finished_ms = Some(now_ms());
    j.estimated_finish_ms = None;
    if update(st, &j, &JobStatus::UNFINISHED).await == Some(true) {
        event(st, &j.id, "error", &format!("The job failed: {message}")).await;
        let _ = std::fs::remove_dir_all(st.finetune.settings.dir.join(&j.id));
    }
}

/// `validating_files` → `queued` or `failed`: the files still exist and
/// are valid (they were checked at upload and creation; a file deleted in
/// between fails the job here).
async fn check_files(st: &Handle, mut j: FineTuneJob) {
    let Ok(spec) = serde_json::from_str::<Spec>(&j.spec) else {
        return fail(
            st,
            j,
            "server_error",
            "the job's settings cannot be read",
            None,
        )
        .await;
    };
    let mut files = vec![("training_file", spec.training_file.clone())];
    if let Some(v) = &spec.validation_file {
        files.push(("validation_file", v.clone()));
    }
    for (param, id) in files {
        let path = st.files.path(&id);
        // A line at a time (one example's memory), off the async workers.
        let checked = tokio::task::spawn_blocking(move || validate::check_file(&path)).await;
        match checked {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => {
                return fail(st, j, "invalid_file", &format!("{id}: {e}"), Some(param)).await;
            }
            Ok(Err(_)) | Err(_) => {
                return fail(
                    st,
                    j,
                    "invalid_file",
                    &format!("the file `{id}` no longer exists"),
                    Some(param),
                )
                .await;
            }
        }
    }
    j.status = JobStatus::Queued;
    if let Ok(true) = st
        .gw
        .store
        .update_ft_job(&j, &[JobStatus::ValidatingFiles])
        .await
    {
        event(st, &j.id, "info", "Files validated; the job is queued.").await;
    }
}

/// One job from the queue to its end.
async fn run_job(st: &Handle, j: FineTuneJob, token: CancellationToken) {
    let Ok(spec) = serde_json::from_str::<Spec>(&j.spec) else {
        return fail(
            st,
            j,
            "server_error",
            "the job's settings cannot be read",
            None,
        )
        .await;
    };
    let Some(base) = st.finetune.bases.get(&j.base_model).cloned() else {
        return fail(
            st,
            j.clone(),
            "invalid_model",
            &format!("the base model `{}` is no longer served", j.base_model),
            Some("model"),
        )
        .await;
    };
    // Cancelled between the queue's read and now: nothing to do (a cancel
    // from here on finds this job's token).
    match st.gw.store.ft_job(&j.id).await {
        Ok(Some(now)) if now.status == JobStatus::Queued => {}
        _ => return,
    }
    let bytes = j.planned_bytes.max(0) as u64;
    let what = format!("fine-tuning job {} ({})", j.id, j.owner);
    // Wait for room in the budget (evicting idle models), unless cancelled.
    let hold = tokio::select! {
        r = st.gw.fleet.reserve(&what, bytes) => r,
        _ = token.cancelled() => return,
        _ = st.gw.closing.cancelled() => return,
    };
    let hold = match hold {
        Ok(h) => h,
        Err(e) => return fail(st, j, "insufficient_memory", &e.to_string(), None).await,
    };
    let mut j = j;
    j.status = JobStatus::Running;
    if j.started_ms.is_none() {
        j.started_ms = Some(now_ms());
    }
    match st
        .gw
        .store
        .claim_ft_job(&j, &st.finetune.settings.gateway)
        .await
    {
        Ok(true) => {}
        // Cancelled meanwhile, or another gateway took it.
        Ok(false) => return,
        Err(e) => {
            tracing::error!("fine-tuning job {}: cannot start it: {e}", j.id);
            return;
        }
    }
    event(
        st,
        &j.id,
        "info",
        &format!(
            "Training started on {}: {:.2} GB of the memory budget held for the trainer; it may use at most {:.2} GB.",
            describe(&spec.placement),
            bytes as f64 / 1e9,
            trainer_memory_limit(bytes) as f64 / 1e9
        ),
    )
    .await;
    let outcome = train(st, &mut j, &spec, &base, &token, &hold).await;
    drop(hold);
    match outcome {
        Outcome::Done {
            adapter,
            trained_tokens,
        } => {
            finish(st, j, &spec, &base, &adapter, trained_tokens).await;
        }
        Outcome::Failed(message) => fail(st, j, "trainer_failed", &message, None).await,
        Outcome::Cancelled => {
            let _ = std::fs::remove_dir_all(st.finetune.settings.dir.join(&j.id));
        }
        Outcome::Stopping => {
            j.status = JobStatus::Queued;
            j.estimated_finish_ms = None;
            if let Ok(true) = st.gw.store.update_ft_job(&j, &[JobStatus::Running]).await {
                event(st, &j.id, "warn", "The gateway is stopping; the job resumes from its last checkpoint when it starts again.").await;
            }
        }
    }
}

/// Copy the trainer's adapter (a GGUF file, or a PEFT directory for vLLM)
/// to where its engine reads it, whole or not at all.
fn store_adapter(adapter: &std::path::Path, target: &std::path::Path) -> std::io::Result<()> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut tmp = target.as_os_str().to_owned();
    tmp.push(".part");
    let tmp = std::path::PathBuf::from(tmp);
    if adapter.is_dir() {
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        for e in std::fs::read_dir(adapter)? {
            let e = e?;
            if e.file_type()?.is_file() {
                std::fs::copy(e.path(), tmp.join(e.file_name()))?;
            }
        }
    } else {
        std::fs::copy(adapter, &tmp)?;
    }
    std::fs::rename(&tmp, target)
}

/// Aula's own engine reads its adapters at start: count the new one and
/// restart the engine (once idle) before the model is announced, so that
/// its first request finds it.
async fn serve_gguf_adapter(st: &Handle, base: &str) {
    st.gw
        .fleet
        .set_extra_bytes(base, st.finetune.adapter_bytes(base));
    let restarted =
        tokio::time::timeout(Duration::from_secs(60), st.gw.fleet.restart_when_idle(base)).await;
    if !matches!(restarted, Ok(Ok(()))) {
        let fleet = st.gw.fleet.clone();
        let base = base.to_string();
        tokio::spawn(async move {
            if let Err(e) = fleet.restart_when_idle(&base).await {
                tracing::warn!(model = %base, "could not restart to serve a new adapter: {e}");
            }
        });
    }
}

/// Take a fine-tuned model's adapter away from its base's engine: unloaded
/// from a vLLM engine at once; for Aula's own engine, counted out and the
/// engine restarted once idle.
pub(crate) async fn remove_adapter(st: &Handle, base: &str, model: &str) {
    let path = st.finetune.adapter_path(base, model);
    if let Some(super::Base::Vllm(_)) = st.finetune.bases.get(base) {
        let _ = std::fs::remove_dir_all(&path);
        if let Err(e) = st.gw.fleet.unload_adapter(base, model).await {
            tracing::warn!(model = %base, "{e}");
        }
        return;
    }
    let _ = std::fs::remove_file(&path);
    st.gw
        .fleet
        .set_extra_bytes(base, st.finetune.adapter_bytes(base));
    let fleet = st.gw.fleet.clone();
    let base = base.to_string();
    tokio::spawn(async move {
        let _ = fleet.restart_when_idle(&base).await;
    });
}

/// Publish the adapter as `ft:…` and mark the job succeeded.
async fn finish(
    st: &Handle,
    mut j: FineTuneJob,
    spec: &Spec,
    base: &super::Base,
    adapter: &std::path::Path,
    trained_tokens: i64,
) {
    let name = super::model_name(&j.base_model, &j.owner, spec.suffix.as_deref(), &j.id);
    let target = st.finetune.adapter_path(&j.base_model, &name);
    let copied = store_adapter(adapter, &target);
    if let Err(e) = copied {
        return fail(
            st,
            j,
            "server_error",
            &format!("the adapter cannot be stored: {e}"),
            None,
        )
        .await;
    }
    if let super::Base::Vllm(_) = base {
        // vLLM loads it at run time (its engines not running load the
        // directory when they start).
        if let Err(e) = st
            .gw
            .fleet
            .load_adapter(&j.base_model, &name, &target)
            .await
        {
            let _ = std::fs::remove_dir_all(&target);
            return fail(
                st,
                j,
                "server_error",
                &format!("vLLM did not load the adapter: {e}"),
                None,
            )
            .await;
        }
    } else {
        serve_gguf_adapter(st, &j.base_model).await;
    }
    j.status = JobStatus::Succeeded;
    j.fine_tuned_model = Some(name.clone());
    j.trained_tokens = trained_tokens;
    j.finished_ms = Some(now_ms());
    j.estimated_finish_ms = None;
    match update_mine(st, &j, &[JobStatus::Running]).await {
        Some(true) => {}
        Some(false) => {
            // Cancelled at the last moment: no model.
            remove_adapter(st, &j.base_model, &name).await;
            return;
        }
        None => {
            // The database kept failing: the job stays `running` until the
            // next start, which trains it again; the adapter is kept.
            tracing::error!(job = %j.id, "the finished job cannot be recorded; it runs again at the next start");
            return;
        }
    }
    st.finetune.publish(&name, tuned(&j));
    event(
        st,
        &j.id,
        "info",
        &format!("The job has successfully completed: {name} is ready."),
    )
    .await;
}
