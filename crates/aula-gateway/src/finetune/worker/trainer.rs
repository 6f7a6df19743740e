//! One job's trainer: the child process under its memory limit, its
//! progress read as events and checkpoints, its end as an outcome.

use super::super::Handle;
use super::*;
use aula_store::{FineTuneCheckpoint, FineTuneJob, JobStatus, now_ms};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

pub(super) enum Outcome {
    Done {
        adapter: std::path::PathBuf,
        trained_tokens: i64,
    },
    Failed(String),
    Cancelled,
    Stopping,
}

pub(super) async fn train(
    st: &Handle,
    j: &mut FineTuneJob,
    spec: &Spec,
    base: &super::super::Base,
    token: &CancellationToken,
    hold: &aula_fleet::lifecycle::Reservation,
) -> Outcome {
    let settings = &st.finetune.settings;
    let dir = settings.dir.join(&j.id);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return Outcome::Failed(format!("cannot create {}: {e}", dir.display()));
    }
    let script = settings.dir.join("aula_train.py");
    if std::fs::read_to_string(&script).ok().as_deref() != Some(TRAINER)
        && let Err(e) = std::fs::write(&script, TRAINER)
    {
        return Outcome::Failed(format!("cannot write the trainer: {e}"));
    }
    // The most memory the trainer may use: RLIMIT_DATA on the host (set
    // below), and on a GPU PyTorch's per-process cap (the trainer sets it).
    let memory_limit = trainer_memory_limit(j.planned_bytes.max(0) as u64);
    let (base_key, base_path) = match base {
        super::super::Base::Gguf(p) => ("base_gguf", p),
        super::super::Base::Vllm(d) => ("base_hf", d),
    };
    let job = json!({
        base_key: base_path,
        "training_file": st.files.path(&spec.training_file),
        "out_dir": dir,
        "n_epochs": spec.n_epochs,
        "batch_size": spec.batch_size,
        "learning_rate": BASE_LEARNING_RATE * spec.learning_rate_multiplier,
        "lora_rank": spec.lora_rank,
        "lora_alpha": spec.lora_alpha,
        "seed": spec.seed,
        "checkpoint_every": settings.checkpoint_every,
        "max_tokens": spec.max_tokens,
        "threads": settings.threads,
        "memory_limit_bytes": memory_limit,
        "device": spec.placement.device,
        "precision": spec.placement.precision,
        "qlora": spec.placement.qlora,
        "gradient_checkpointing": spec.placement.gradient_checkpointing,
    });
    let job_file = dir.join("job.json");
    if let Err(e) = std::fs::write(&job_file, job.to_string()) {
        return Outcome::Failed(format!("cannot write {}: {e}", job_file.display()));
    }
    let logs = crate::home::logs_dir();
    let _ = std::fs::create_dir_all(&logs);
    let log = logs.join(format!("fine-tuning-{}.log", j.id));
    let stderr = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
    {
        Ok(f) => f,
        Err(e) => return Outcome::Failed(format!("cannot open {}: {e}", log.display())),
    };
    let mut cmd = tokio::process::Command::new(settings.python());
    cmd.arg(&script)
        .arg(&job_file)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true);
    crate::child_env(&mut cmd);
    #[cfg(target_os = "linux")]
    // SAFETY: between fork and exec only the async-signal-safe prctl and
    // setrlimit run.
    unsafe {
        cmd.pre_exec(move || {
            // A SIGKILLed gateway leaves no trainer behind.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            let lim = libc::rlimit {
                rlim_cur: memory_limit as libc::rlim_t,
                rlim_max: memory_limit as libc::rlim_t,
            };
            libc::setrlimit(libc::RLIMIT_DATA, &lim);
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome::Failed(format!(
                "the trainer ({}) cannot start: {e}; run `bash scripts/setup-trainer.sh` or set [fine_tuning] python",
                settings.python().display()
            ));
        }
    };
    let Some(stdout) = child.stdout.take() else {
        return Outcome::Failed("the trainer's output cannot be read".into());
    };
    let mut lines = BufReader::new(stdout).lines();
    let mut last_error: Option<String> = None;
    let mut done: Option<(std::path::PathBuf, i64)> = None;
    // Tokens of every step run (steps run again after a resume count again).
    let mut trained = j.trained_tokens;
    let started = std::time::Instant::now();
    let mut first_step: Option<(i64, std::time::Instant)> = None;
    // Bounds of one run: its wall time and the tokens it trains.
    let deadline = tokio::time::Instant::now() + settings.max_job_time;
    let max_tokens = i64::try_from(settings.max_job_tokens).unwrap_or(i64::MAX);
    loop {
        let line = tokio::select! {
            l = lines.next_line() => l,
            _ = tokio::time::sleep_until(deadline) => {
                let _ = child.kill().await;
                return Outcome::Failed(format!(
                    "the job trained for {:.1} hours, the most one job may ([fine_tuning] max_job_hours), and was stopped",
                    settings.max_job_time.as_secs_f64() / 3600.0
                ));
            }
            _ = token.cancelled() => {
                let _ = child.kill().await;
                return Outcome::Cancelled;
            }
            _ = st.gw.closing.cancelled() => {
                let _ = child.kill().await;
                return Outcome::Stopping;
            }
        };
        let Ok(Some(line)) = line else { break };
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let msg = v["message"].as_str().unwrap_or("").to_string();
        match v["type"].as_str().unwrap_or("") {
            "info" => event(st, &j.id, "info", &msg).await,
            "warn" => event(st, &j.id, "warn", &msg).await,
            "error" => last_error = Some(msg),
            "memory" => {
                // The trainer's measured peak after its first step (and at
                // its end): recorded, and from then on the fleet holds it
                // plus a quarter (later batches may be longer: SmolLM2 on
                // the CPU peaked 14% above its first step's figure) in
                // place of the plan's estimate.
                let Some(peak) = v["peak_bytes"].as_u64() else {
                    continue;
                };
                let device = v["device"].as_str().unwrap_or("cpu");
                let planned = j.planned_bytes.max(0) as u64;
                let data = json!({"peak_bytes": peak, "planned_bytes": planned, "device": device,
                                  "step": v["step"]});
                let message = format!(
                    "Peak memory measured on {device}: {:.2} GB (planned {:.2} GB, {:+.0}%).",
                    peak as f64 / 1e9,
                    planned as f64 / 1e9,
                    (peak as f64 / planned.max(1) as f64 - 1.0) * 100.0
                );
                event_with(st, &j.id, "info", "message", &message, Some(data)).await;
                // Never more than the trainer may use.
                hold.set_bytes(peak.saturating_add(peak / 4).min(memory_limit));
            }
            "metrics" => {
                let step = v["step"].as_i64().unwrap_or(0);
                let total = v["total_steps"].as_i64().unwrap_or(0);
                trained += v["tokens"].as_i64().unwrap_or(0);
                let data = json!({
                    "step": step,
                    "total_steps": total,
                    "epoch": v["epoch"],
                    "train_loss": v["loss"],
                    "learning_rate": v["learning_rate"],
                    "tokens_per_s": v["tokens_per_s"],
                });
                let message = format!("Step {step}/{total}: training loss={}", v["loss"]);
                event_with(st, &j.id, "info", "metrics", &message, Some(data)).await;
                // The finish, from the pace since the first step seen.
                let now = std::time::Instant::now();
                let (s0, t0) = *first_step.get_or_insert((step, now));
                if step > s0 && total > step {
                    let per = now.duration_since(t0).as_secs_f64() / (step - s0) as f64;
                    j.estimated_finish_ms =
                        Some(now_ms() + ((total - step) as f64 * per * 1000.0) as i64);
                }
                j.trained_tokens = trained;
                let mine = st
                    .gw
                    .store
                    .update_ft_job_by(j, &[JobStatus::Running], &settings.gateway)
                    .await;
                if let Ok(false) = mine {
                    // No longer this gateway's running job in the database:
                    // cancelled through another gateway, or put back in the
                    // queue by one that took this gateway for dead. Its
                    // record stands.
                    let _ = child.kill().await;
                    return Outcome::Cancelled;
                }
                if trained > max_tokens {
                    let _ = child.kill().await;
                    return Outcome::Failed(format!(
                        "the job trained {trained} tokens, past the {max_tokens} one job may ([fine_tuning] max_job_tokens), and was stopped"
                    ));
                }
            }
            "checkpoint" => {
                let step = v["step"].as_i64().unwrap_or(0);
                let c = FineTuneCheckpoint {
                    id: format!("ftckpt-{}", crate::random_id(24)),
                    job_id: j.id.clone(),
                    step,
                    metrics: json!({"step": step, "train_loss": v["loss"]}).to_string(),
                    created_ms: now_ms(),
                };
                let _ = st.gw.store.add_ft_checkpoint(&c).await;
                event(
                    st,
                    &j.id,
                    "info",
                    &format!("Checkpoint saved at step {step}."),
                )
                .await;
            }
            "done" => {
                if let Some(a) = v["adapter"].as_str() {
                    done = Some((a.into(), trained));
                }
            }
            _ => {}
        }
    }
    let status = child.wait().await;
    match (status, done) {
        (Ok(s), Some((adapter, tokens))) if s.success() => Outcome::Done {
            adapter,
            trained_tokens: tokens,
        },
        (status, _) => {
            let why = last_error
                .or_else(|| last_line(&log))
                .unwrap_or_else(|| format!("the trainer ended ({status:?}) without an adapter"));
            let why = if ["MemoryError", "out of memory", "Cannot allocate memory"]
                .iter()
                .any(|m| why.contains(m))
            {
                format!(
                    "{why} (a trainer may use at most {:.2} GB: twice the plan's estimate of this job's peak, plus {} GB)",
                    memory_limit as f64 / 1e9,
                    TRAINER_MEMORY_HEADROOM / 1_000_000_000
                )
            } else {
                why
            };
            tracing::warn!(job = %j.id, "trainer failed after {:.0} s: {why}", started.elapsed().as_secs_f64());
            Outcome::Failed(why)
        }
    }
}

/// The last non-empty line of a log (a trainer that died without saying why).
/// Only the log's last 64 KiB are read: a trainer's log has no bound.
pub(super) fn last_line(path: &std::path::Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(64 << 10))).ok()?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.chars().take(500).collect())
}
