//! The fine-tuning API's job object, typed, with Aula's own settings under
//! `aula`.

use super::super::worker::Spec;
use aula_store::{FineTuneJob, JobStatus};
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FineTuningJob {
    pub object: &'static str,
    pub id: String,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    pub model: String,
    pub fine_tuned_model: Option<String>,
    pub organization_id: &'static str,
    pub user_provided_suffix: Option<String>,
    pub status: JobStatus,
    pub training_file: Option<String>,
    pub validation_file: Option<String>,
    pub hyperparameters: Option<Hyperparameters>,
    pub method: Method,
    pub result_files: Vec<String>,
    /// Only once it succeeded.
    pub trained_tokens: Option<i64>,
    /// `{code, message, param}` as the worker recorded it.
    pub error: Option<Value>,
    pub seed: Option<i64>,
    pub estimated_finish: Option<i64>,
    pub integrations: Vec<Value>,
    pub metadata: Option<Value>,
    pub aula: AulaJob,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Hyperparameters {
    pub n_epochs: u32,
    pub batch_size: u32,
    pub learning_rate_multiplier: f64,
}

/// Supervised fine-tuning, the one method Aula runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Method {
    Supervised { supervised: Supervised },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Supervised {
    pub hyperparameters: Option<Hyperparameters>,
}

/// What OpenAI's object has no field for: whose job, the LoRA, the memory
/// planned, progress, and who else may use the model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AulaJob {
    pub user: String,
    pub lora_rank: Option<u32>,
    pub lora_alpha: Option<f64>,
    pub qlora: bool,
    /// Where it trains: `cpu` or `cuda`, and in what precision.
    pub device: Option<crate::finetune::device::Device>,
    pub precision: Option<crate::finetune::device::Precision>,
    pub planned_bytes: i64,
    pub trained_tokens_so_far: i64,
    pub shared_with_groups: Vec<String>,
}

fn secs(ms: i64) -> i64 {
    ms / 1000
}

impl From<&FineTuneJob> for FineTuningJob {
    fn from(j: &FineTuneJob) -> FineTuningJob {
        let spec: Option<Spec> = serde_json::from_str(&j.spec).ok();
        let hyper = spec.as_ref().map(|s| Hyperparameters {
            n_epochs: s.n_epochs,
            batch_size: s.batch_size,
            learning_rate_multiplier: s.learning_rate_multiplier,
        });
        FineTuningJob {
            object: "fine_tuning.job",
            id: j.id.clone(),
            created_at: secs(j.created_ms),
            finished_at: j.finished_ms.map(secs),
            model: j.base_model.clone(),
            fine_tuned_model: j.fine_tuned_model.clone(),
            organization_id: "aula",
            user_provided_suffix: spec.as_ref().and_then(|s| s.suffix.clone()),
            status: j.status,
            training_file: spec.as_ref().map(|s| s.training_file.clone()),
            validation_file: spec.as_ref().and_then(|s| s.validation_file.clone()),
            hyperparameters: hyper,
            method: Method::Supervised {
                supervised: Supervised {
                    hyperparameters: hyper,
                },
            },
            result_files: Vec::new(),
            trained_tokens: (j.status == JobStatus::Succeeded).then_some(j.trained_tokens),
            error: j
                .error
                .as_deref()
                .and_then(|e| serde_json::from_str::<Value>(e).ok()),
            seed: spec.as_ref().map(|s| s.seed),
            estimated_finish: j.estimated_finish_ms.map(secs),
            integrations: Vec::new(),
            metadata: None,
            aula: AulaJob {
                user: j.owner.clone(),
                lora_rank: spec.as_ref().map(|s| s.lora_rank),
                lora_alpha: spec.as_ref().map(|s| s.lora_alpha),
                qlora: spec.as_ref().is_some_and(|s| s.placement.qlora),
                device: spec.as_ref().map(|s| s.placement.device),
                precision: spec.as_ref().map(|s| s.placement.precision),
                planned_bytes: j.planned_bytes,
                trained_tokens_so_far: j.trained_tokens,
                shared_with_groups: spec
                    .as_ref()
                    .map(|s| s.shared_with_groups.clone())
                    .unwrap_or_default(),
            },
        }
    }
}

/// One event of a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobEvent {
    pub object: &'static str,
    pub id: String,
    pub created_at: i64,
    pub level: String,
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// An object always (OpenAI's description has no null).
    pub data: Value,
}

impl JobEvent {
    /// Event `e` of job `job_id`.
    pub fn of(job_id: &str, e: &aula_store::FineTuneEvent) -> JobEvent {
        let short = job_id.strip_prefix("ftjob-").unwrap_or(job_id);
        JobEvent {
            object: "fine_tuning.job.event",
            id: format!("ftevent-{short}-{}", e.seq),
            created_at: secs(e.created_ms),
            level: e.level.clone(),
            message: e.message.clone(),
            kind: e.kind.clone(),
            data: e
                .data
                .as_deref()
                .and_then(|d| serde_json::from_str::<Value>(d).ok())
                .filter(Value::is_object)
                .unwrap_or_else(|| Value::Object(serde_json::Map::new())),
        }
    }
}

/// A page of a job's events (OpenAI's list without `first_id`/`last_id`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventList {
    pub object: &'static str,
    pub data: Vec<JobEvent>,
    pub has_more: bool,
}

/// A checkpoint of a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Checkpoint {
    pub object: &'static str,
    pub id: String,
    pub created_at: i64,
    pub fine_tuning_job_id: String,
    pub fine_tuned_model_checkpoint: String,
    pub step_number: i64,
    pub metrics: Value,
}

impl Checkpoint {
    /// Checkpoint `c` of job `j`.
    pub fn of(j: &FineTuneJob, c: &aula_store::FineTuneCheckpoint) -> Checkpoint {
        let model = j
            .fine_tuned_model
            .clone()
            .unwrap_or_else(|| format!("ft:{}", j.base_model));
        Checkpoint {
            object: "fine_tuning.job.checkpoint",
            id: c.id.clone(),
            created_at: secs(c.created_ms),
            fine_tuning_job_id: c.job_id.clone(),
            fine_tuned_model_checkpoint: format!("{model}:ckpt-step-{}", c.step),
            step_number: c.step,
            metrics: serde_json::from_str::<Value>(&c.metrics).unwrap_or(Value::Null),
        }
    }
}
