//! Fine-tuning jobs: the OpenAI fine-tuning API (`api/`), a queue that
//! trains within the fleet's memory budget (`worker/`), and serving the
//! result as a new model on the base's own engine.
//!
//! Rules it enforces:
//! * A job's base is a chat model Aula serves from a GGUF with its own
//!   engine (`aula engine`), or with vLLM from a local Hugging Face
//!   directory (the trainer then trains on that directory's weights);
//!   anything else is a 400 before anything is queued, as is a file that is not the caller's, not `fine-tune`, or not
//!   valid (the error names the line).
//! * Per user, `[[limits]]` bound jobs waiting or training at once, jobs
//!   created per day and tokens trained per term (429/403 at creation).
//! * Jobs train oldest first, at most `[fine_tuning] max_running` at once.
//!   A job holds the planner's estimate of its trainer's memory in the
//!   fleet's budget from its start to its end (idle, unpinned models are
//!   evicted for it; a busy model never is: the job waits, `queued`).
//! * The trainer is a child process (its log in the logs directory); it is
//!   killed when the job is cancelled or the gateway stops, and never
//!   restarted: a job whose trainer fails is `failed` with the trainer's
//!   last error line. A gateway that stops mid-job puts the job back in the
//!   queue at start, and the trainer resumes from its last checkpoint.
//! * Several gateways on one PostgreSQL: a job is claimed by one (moved to
//!   `running` with its gateway id, conditional on `queued`), and the jobs
//!   of a gateway that left the list of gateways (no heartbeat for 10 s) go
//!   back to the queue, checked every 5 s by each gateway.
//! * The model `ft:BASE:USER:SUFFIX:JOBID` is an adapter served by the
//!   base's engine: a GGUF file Aula's engine reads from its `--lora-dir`
//!   (restarted once idle to read a new one), or a PEFT directory a vLLM
//!   engine loads at run time (aula_fleet::adapters; unloaded when the
//!   model is deleted). One loaded base for all its fine-tunes.
//!   Its owner sees it, and the groups a teacher shared it with; deleting it
//!   removes the adapter.

pub mod api;
pub mod device;
pub use crate::training_file as validate;
pub mod worker;

use crate::identity::Identity;
use crate::tuned::TunedModels;
use aula_store::Role;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// What fine-tuning holds: the request path's services, the uploaded
/// files (training files), and its jobs and models.
#[derive(Clone)]
pub struct Handle {
    pub gw: Arc<crate::pipeline::Gateway>,
    pub files: Arc<crate::files::Files>,
    pub finetune: Arc<FineTune>,
}

/// `[fine_tuning]` resolved.
#[derive(Debug, Clone)]
pub struct FineTuneSettings {
    /// None: on when the trainer's Python exists.
    pub enabled: Option<bool>,
    pub python: Option<PathBuf>,
    pub max_running: usize,
    pub checkpoint_every: u32,
    pub threads: Option<usize>,
    /// Jobs' working directories (`<id>/`: job.json, checkpoint, adapter).
    pub dir: PathBuf,
    /// Adapters served per base model (`<base>/<model>.gguf`).
    pub adapters: PathBuf,
    /// The longest one job trains before it is stopped and failed.
    pub max_job_time: std::time::Duration,
    /// The most tokens one job may train.
    pub max_job_tokens: u64,
    /// This gateway's id in the database's list of gateways: the jobs it
    /// trains are marked with it.
    pub gateway: String,
    /// `[fine_tuning] device`.
    pub device: device::DeviceSetting,
}

/// `[fine_tuning] max_job_hours` when not set.
pub const DEFAULT_MAX_JOB_TIME: std::time::Duration = std::time::Duration::from_secs(12 * 3600);
/// `[fine_tuning] max_job_tokens` when not set.
pub const DEFAULT_MAX_JOB_TOKENS: u64 = 20_000_000;

impl Default for FineTuneSettings {
    fn default() -> Self {
        let home = crate::home::aula_home();
        FineTuneSettings {
            enabled: None,
            python: None,
            max_running: 1,
            checkpoint_every: 10,
            threads: None,
            dir: home.join("fine_tuning"),
            adapters: home.join("adapters"),
            max_job_time: DEFAULT_MAX_JOB_TIME,
            max_job_tokens: DEFAULT_MAX_JOB_TOKENS,
            gateway: String::new(),
            device: device::DeviceSetting::Auto,
        }
    }
}

impl FineTuneSettings {
    /// The trainer's Python: the configured one, $AULA_TRAIN_PYTHON, or the
    /// virtual environment `scripts/setup-trainer.sh` makes.
    pub fn python(&self) -> PathBuf {
        if let Some(p) = &self.python {
            return p.clone();
        }
        if let Ok(p) = std::env::var("AULA_TRAIN_PYTHON") {
            return PathBuf::from(p);
        }
        let home = std::env::var("HOME").unwrap_or_default();
        PathBuf::from(home).join(".cache/aula/train-venv/bin/python")
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or_else(|| self.python().exists())
    }
}

/// A base model jobs may train on, and how its fine-tunes are served.
#[derive(Debug, Clone, PartialEq)]
pub enum Base {
    /// Aula's own engine: trained on the GGUF's weights, served as a GGUF
    /// adapter the engine reads from its `--lora-dir` at start.
    Gguf(PathBuf),
    /// vLLM: trained on the Hugging Face directory it serves, served as a
    /// PEFT adapter directory it loads at run time (aula_fleet::adapters).
    Vllm(PathBuf),
}

impl Base {
    /// The model's shape, for the trainer's memory plan.
    pub fn shape(&self) -> Result<aula_planner::shape::ModelShape, String> {
        match self {
            Base::Gguf(gguf) => aula_planner::resolve_model(gguf),
            Base::Vllm(dir) => aula_planner::hf::read(&dir.join("config.json")),
        }
    }
}

pub use crate::tuned::Tuned;

/// The gateway's fine-tuning side.
pub struct FineTune {
    pub settings: FineTuneSettings,
    /// Settled at start (the engines' `--lora-dir` and the worker were).
    pub enabled: bool,
    /// Creations one at a time: a user's limits are checked and the job
    /// stored as one step.
    pub(crate) creating: tokio::sync::Mutex<()>,
    /// Files already checked, by id (a file never changes): a create that
    /// names one again does not read it again.
    pub(crate) checked: Mutex<validate::Checked>,
    /// Chat models on Aula's own engine, by name.
    pub bases: HashMap<String, Base>,
    /// Fine-tuned models by name (shared with the request path).
    pub tuned: Arc<TunedModels>,
    /// Jobs taken by the worker (waiting for memory or training): cancel
    /// them here.
    pub(crate) active: Mutex<HashMap<String, CancellationToken>>,
    /// Wakes the worker (a job created, cancelled or finished).
    pub(crate) wake: tokio::sync::Notify,
    /// The box's NVIDIA GPU, read at start (None: none, or fine-tuning is
    /// off or set to the CPU).
    pub gpu: Option<device::TrainGpu>,
}

impl FineTune {
    pub fn new(
        settings: FineTuneSettings,
        bases: HashMap<String, Base>,
        tuned: Arc<TunedModels>,
    ) -> FineTune {
        let enabled = settings.is_enabled();
        let gpu = if enabled && settings.device != device::DeviceSetting::Cpu {
            device::detect()
        } else {
            None
        };
        FineTune {
            enabled,
            gpu,
            creating: tokio::sync::Mutex::new(()),
            checked: Default::default(),
            settings,
            bases,
            tuned,
            active: Mutex::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// The fine-tuned model `name` as `id` may use it.
    pub fn model_for(&self, name: &str, id: &Identity) -> Option<Tuned> {
        self.tuned.model_for(name, id)
    }

    /// The fine-tuned model `name`, whoever may see it.
    pub fn model(&self, name: &str) -> Option<Tuned> {
        self.tuned.model(name)
    }

    /// Every fine-tuned model `id` may use, oldest first.
    pub fn models_for(&self, id: &Identity) -> Vec<(String, Tuned)> {
        self.tuned.models_for(id)
    }

    pub(crate) fn publish(&self, name: &str, t: Tuned) {
        self.tuned.publish(name, t)
    }

    pub(crate) fn unpublish(&self, name: &str) -> Option<Tuned> {
        self.tuned.unpublish(name)
    }

    /// The adapter of a fine-tuned model: a GGUF file for Aula's own
    /// engine, a PEFT directory for vLLM.
    pub fn adapter_path(&self, base: &str, model: &str) -> PathBuf {
        let dir = self.settings.adapters.join(base);
        match self.bases.get(base) {
            Some(Base::Vllm(_)) => dir.join(model),
            _ => dir.join(format!("{model}.gguf")),
        }
    }

    /// The bytes of a base's adapters on disk (what they add to its engine).
    pub fn adapter_bytes(&self, base: &str) -> u64 {
        std::fs::read_dir(self.settings.adapters.join(base))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "gguf"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Teachers and admins may see and cancel everyone's jobs.
    pub fn is_staff(id: &Identity) -> bool {
        matches!(id.role, Role::Teacher | Role::Admin)
    }
}

/// The model name OpenAI's pattern gives a fine-tune:
/// `ft:BASE:USER:SUFFIX:JOBID` (the suffix left out when none), with
/// anything but letters, digits, `.`, `-` and `_` in the parts made `-` (the
/// name is also a file name).
pub fn model_name(base: &str, user: &str, suffix: Option<&str>, job_id: &str) -> String {
    let clean = |s: &str| -> String {
        let c: String = s
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        c.trim_start_matches('.').to_string()
    };
    let short = job_id.strip_prefix("ftjob-").unwrap_or(job_id);
    match suffix {
        Some(s) => format!(
            "ft:{}:{}:{}:{}",
            clean(base),
            clean(user),
            clean(s),
            clean(short)
        ),
        None => format!("ft:{}:{}::{}", clean(base), clean(user), clean(short)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_openais_pattern_and_are_safe_file_names() {
        assert_eq!(
            model_name("smol", "ann", Some("mascot"), "ftjob-abc"),
            "ft:smol:ann:mascot:abc"
        );
        assert_eq!(
            model_name("smol", "../evil/x", None, "ftjob-abc"),
            "ft:smol:-evil-x::abc"
        );
        assert!(!model_name("a/b", "c", Some("d"), "e").contains('/'));
    }
}
