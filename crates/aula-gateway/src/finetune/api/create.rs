//! `POST /v1/fine_tuning/jobs`: a job checked (its base, its file, its
//! hyperparameters, the caller's limits and the memory plan) and queued.

use super::super::worker::{Spec, event};
use super::super::{FineTune, Handle, device, validate};
use super::*;
use crate::auth::Caller;
use crate::fields::{body_object, groups, only, opt_str};
use crate::files::{own_file, store_error};
use crate::identity::Identity;
use aula_protocol::ApiError;
use aula_store::{FineTuneJob, JobStatus, now_ms};
use axum::body::Body;
use axum::extract::State;
use serde_json::{Map, Value};

/// Most epochs, batch size and learning-rate multiplier a job may ask.
pub(super) const MAX_EPOCHS: u64 = 50;

pub(super) const MAX_BATCH: u64 = 256;

pub(super) const MAX_LR_MULTIPLIER: f64 = 10.0;

pub(super) const MAX_RANK: u64 = 256;

/// Tokens per example the trainer keeps (longer ones are cut, with a warning).
pub(super) const MAX_EXAMPLE_TOKENS: u32 = 1024;

/// `"auto"`, absent, or an integer in `lo..=hi`.
pub(super) fn int_or_auto(
    v: Option<&Value>,
    name: &str,
    lo: u64,
    hi: u64,
) -> Result<Option<u64>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "auto" => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| (lo..=hi).contains(&n)) => {
            Ok(n.as_u64())
        }
        _ => Err(ApiError::invalid_param(
            name,
            format!("`{name}` must be \"auto\" or an integer from {lo} to {hi}"),
        )),
    }
}

/// The hyperparameters, from `method.supervised.hyperparameters` or the
/// older top-level `hyperparameters` (not both).
pub(super) fn hyperparameters(o: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    let top = o.get("hyperparameters").filter(|v| !v.is_null());
    let method = o.get("method").filter(|v| !v.is_null());
    let from_method = match method {
        None => None,
        Some(Value::Object(m)) => {
            if let Some(k) = m
                .keys()
                .find(|k| !matches!(k.as_str(), "type" | "supervised"))
            {
                return Err(ApiError::invalid_param(
                    "method",
                    format!("`method.{k}`: Aula trains the `supervised` method only"),
                ));
            }
            match m.get("type").and_then(Value::as_str) {
                Some("supervised") => {}
                Some(other) => {
                    return Err(ApiError::invalid_param(
                        "method",
                        format!(
                            "the `{other}` method is not supported; Aula trains `supervised` (LoRA) jobs"
                        ),
                    ));
                }
                None => {
                    return Err(ApiError::invalid_param(
                        "method",
                        "`method.type` is required (supervised)",
                    ));
                }
            }
            match m.get("supervised") {
                None | Some(Value::Null) => None,
                Some(Value::Object(s)) => {
                    if let Some(k) = s.keys().find(|k| k.as_str() != "hyperparameters") {
                        return Err(ApiError::invalid_param(
                            "method",
                            format!("unknown parameter `method.supervised.{k}`"),
                        ));
                    }
                    s.get("hyperparameters").filter(|v| !v.is_null())
                }
                Some(_) => {
                    return Err(ApiError::invalid_param(
                        "method",
                        "`method.supervised` must be an object",
                    ));
                }
            }
        }
        Some(_) => {
            return Err(ApiError::invalid_param(
                "method",
                "`method` must be an object",
            ));
        }
    };
    let h = match (top, from_method) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_param(
                "hyperparameters",
                "give the hyperparameters in `method.supervised.hyperparameters` or in `hyperparameters`, not both",
            ));
        }
        (Some(h), None) | (None, Some(h)) => h,
        (None, None) => return Ok(Map::new()),
    };
    let Value::Object(h) = h else {
        return Err(ApiError::invalid_param(
            "hyperparameters",
            "`hyperparameters` must be an object",
        ));
    };
    if let Some(k) = h.keys().find(|k| {
        !matches!(
            k.as_str(),
            "n_epochs" | "batch_size" | "learning_rate_multiplier"
        )
    }) {
        return Err(ApiError::invalid_param(
            "hyperparameters",
            format!(
                "unknown hyperparameter `{k}`; Aula takes n_epochs, batch_size and learning_rate_multiplier (LoRA settings go in `lora`)"
            ),
        ));
    }
    Ok(h.clone())
}

pub(super) struct Lora {
    pub(super) rank: u32,
    pub(super) alpha: f64,
    pub(super) qlora: bool,
}

/// Aula's `lora`: `{rank, alpha, qlora}`.
pub(super) fn lora(v: Option<&Value>) -> Result<Lora, ApiError> {
    let mut l = Lora {
        rank: 8,
        alpha: 16.0,
        qlora: false,
    };
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(l);
    };
    let Value::Object(o) = v else {
        return Err(ApiError::invalid_param(
            "lora",
            "`lora` must be an object: {rank, alpha, qlora}",
        ));
    };
    if let Some(k) = o
        .keys()
        .find(|k| !matches!(k.as_str(), "rank" | "alpha" | "qlora"))
    {
        return Err(ApiError::invalid_param(
            "lora",
            format!("unknown parameter `lora.{k}`; it takes rank, alpha and qlora"),
        ));
    }
    if let Some(r) = o.get("rank") {
        l.rank = r
            .as_u64()
            .filter(|r| (1..=MAX_RANK).contains(r))
            .ok_or_else(|| {
                ApiError::invalid_param(
                    "lora",
                    format!("`lora.rank` must be an integer from 1 to {MAX_RANK}"),
                )
            })? as u32;
        l.alpha = 2.0 * f64::from(l.rank);
    }
    if let Some(a) = o.get("alpha") {
        l.alpha = a
            .as_f64()
            .filter(|a| *a > 0.0 && *a <= 4096.0)
            .ok_or_else(|| {
                ApiError::invalid_param(
                    "lora",
                    "`lora.alpha` must be a number above 0 and at most 4096",
                )
            })?;
    }
    match o.get("qlora") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        // Whether this box can: the job's placement says (device.rs).
        Some(Value::Bool(true)) => l.qlora = true,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "lora",
                "`lora.qlora` must be true or false",
            ));
        }
    }
    Ok(l)
}

/// The caller's own `fine-tune` file, valid; its summary.
pub(super) async fn training_data(
    st: &Handle,
    id: &Identity,
    file_id: &str,
    param: &str,
) -> Result<validate::Summary, ApiError> {
    let f = own_file(&st.gw.store, id, file_id)
        .await
        .map_err(|_| ApiError::invalid_param(param, format!("no file `{file_id}` of yours")))?;
    if f.purpose != "fine-tune" {
        return Err(ApiError::invalid_param(
            param,
            format!(
                "the file `{file_id}` was uploaded with purpose `{}`; upload training data with purpose `fine-tune`",
                f.purpose
            ),
        ));
    }
    let remembered = st
        .finetune
        .checked
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(file_id);
    let outcome = match remembered {
        Some(r) => r,
        None => {
            // A line at a time, off the async workers: a large file costs
            // one example's memory, not its size.
            let path = st.files.path(file_id);
            let r = tokio::task::spawn_blocking(move || validate::check_file(&path))
                .await
                .map_err(|e| ApiError::Internal(format!("checking {file_id}: {e}")))?
                .map_err(|e| ApiError::Internal(format!("reading {file_id}: {e}")))?;
            st.finetune
                .checked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .put(file_id, r.clone());
            r
        }
    };
    outcome.map_err(|e| ApiError::invalid_param(param, format!("{file_id}: {e}")))
}

/// `POST /v1/fine_tuning/jobs`.
pub async fn create(State(st): State<Handle>, Caller(id): Caller, body: Body) -> Answer {
    enabled(&st)?;
    let o = body_object(body).await?;
    only(
        &o,
        &[
            "model",
            "training_file",
            "validation_file",
            "suffix",
            "seed",
            "hyperparameters",
            "method",
            "integrations",
            "lora",
            "shared_with_groups",
        ],
    )?;
    if o.get("integrations")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
    {
        return Err(ApiError::invalid_param(
            "integrations",
            "Aula has no integrations (Weights & Biases): the job's events carry its metrics",
        ));
    }
    let model = opt_str(&o, "model", 256)?.ok_or_else(|| {
        ApiError::invalid_param("model", "`model` is required: the base model to fine-tune")
    })?;
    // An alias names its model.
    let base = match st.gw.router.get(model) {
        Ok(r) => r.name.clone(),
        Err(_) => {
            return Err(ApiError::ModelNotFound(format!(
                "the model `{model}` does not exist; models that can be fine-tuned here: {}",
                base_names(&st.finetune).join(", ")
            )));
        }
    };
    if !st.gw.visible_models(&id).contains(&base) {
        return Err(ApiError::Forbidden {
            message: format!(
                "your limits do not include the model `{base}`, so you cannot fine-tune it"
            ),
            code: "model_not_allowed",
            resets_at: None,
        });
    }
    let Some(base_entry) = st.finetune.bases.get(&base) else {
        return Err(ApiError::invalid_param(
            "model",
            format!(
                "`{model}` cannot be fine-tuned here: Aula fine-tunes chat models it serves from a GGUF file with its own engine, or with vLLM from a local Hugging Face directory ({})",
                base_names(&st.finetune).join(", ")
            ),
        ));
    };
    let training_file = opt_str(&o, "training_file", 64)?
        .ok_or_else(|| ApiError::invalid_param("training_file", "`training_file` is required"))?
        .to_string();
    let validation_file = opt_str(&o, "validation_file", 64)?.map(String::from);
    let suffix = opt_str(&o, "suffix", 64)?.map(String::from);
    if let Some(s) = &suffix
        && (s.is_empty()
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    {
        return Err(ApiError::invalid_param(
            "suffix",
            "`suffix` must be 1 to 64 letters, digits, `-` or `_`",
        ));
    }
    let seed = match o.get("seed") {
        None | Some(Value::Null) => rand::random::<u32>() as i64 & 0x7fff_ffff,
        Some(v) => v
            .as_i64()
            .filter(|s| (0..=i64::from(i32::MAX)).contains(s))
            .ok_or_else(|| {
                ApiError::invalid_param("seed", "`seed` must be an integer from 0 to 2147483647")
            })?,
    };
    let h = hyperparameters(&o)?;
    let n_epochs = int_or_auto(h.get("n_epochs"), "n_epochs", 1, MAX_EPOCHS)?;
    let batch_size = int_or_auto(h.get("batch_size"), "batch_size", 1, MAX_BATCH)?;
    let lr = match h.get("learning_rate_multiplier") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s == "auto" => None,
        Some(v) => Some(
            v.as_f64()
                .filter(|x| *x > 0.0 && *x <= MAX_LR_MULTIPLIER)
                .ok_or_else(|| ApiError::invalid_param("learning_rate_multiplier", format!("`learning_rate_multiplier` must be \"auto\" or a number above 0 and at most {MAX_LR_MULTIPLIER}")))?,
        ),
    };
    let lora = lora(o.get("lora"))?;
    if matches!(base_entry, super::super::Base::Vllm(_))
        && lora.rank > aula_fleet::adapters::MAX_LORA_RANK
    {
        return Err(ApiError::invalid_param(
            "lora",
            format!(
                "`{base}` is served by vLLM, which Aula starts with --max-lora-rank {}: ask for `lora.rank` at most that",
                aula_fleet::adapters::MAX_LORA_RANK
            ),
        ));
    }
    let placement = device::choose(
        st.finetune.settings.device,
        st.finetune.gpu.as_ref(),
        lora.qlora,
    )
    .map_err(|e| ApiError::invalid_param(if lora.qlora { "lora" } else { "model" }, e))?;
    let shares =
        groups(o.get("shared_with_groups"), &id, "a fine-tuned model")?.unwrap_or_default();
    // The limits that need no reading first (jobs at once, jobs today): a
    // user at their limit costs no file reading at all.
    check_limits(&st, &id, 0).await?;
    let summary = training_data(&st, &id, &training_file, "training_file").await?;
    if let Some(v) = &validation_file {
        training_data(&st, &id, v, "validation_file").await?;
    }
    // "auto": 3 epochs; batches of up to 8 on the CPU, on a GPU the most
    // (up to 16) that fit; the base learning rate x 2.
    let from_gguf = matches!(base_entry, super::super::Base::Gguf(_));
    let shape = base_entry
        .shape()
        .map_err(|e| ApiError::Internal(format!("the base model cannot be read: {e}")))?;
    let room = st
        .gw
        .fleet
        .budget_bytes()
        .saturating_sub(st.gw.fleet.pinned_bytes());
    let seq = example_tokens(summary.longest_chars, MAX_EXAMPLE_TOKENS);
    let batch_size = batch_size.map(|b| b as u32).unwrap_or_else(|| {
        device::auto_batch(
            &shape,
            from_gguf,
            &placement,
            lora.rank,
            seq,
            summary.examples,
            room,
        )
    });
    let spec = Spec {
        training_file,
        validation_file,
        suffix,
        seed,
        n_epochs: n_epochs.unwrap_or(3) as u32,
        batch_size: batch_size.max(1),
        learning_rate_multiplier: lr.unwrap_or(2.0),
        lora_rank: lora.rank,
        lora_alpha: lora.alpha,
        shared_with_groups: shares,
        examples: summary.examples,
        max_tokens: MAX_EXAMPLE_TOKENS,
        placement,
    };
    // About 3.5 characters a token: the limits' estimate before the trainer counts.
    let est_tokens = (summary.chars as f64 / 3.5) as u64 * u64::from(spec.n_epochs);
    let cap = st.finetune.settings.max_job_tokens;
    if est_tokens > cap {
        return Err(ApiError::invalid_param(
            "training_file",
            format!(
                "this job would train about {est_tokens} tokens ({} examples, {} epochs); one job may train at most {cap} ([fine_tuning] max_job_tokens): use fewer examples or epochs",
                summary.examples, spec.n_epochs
            ),
        ));
    }
    let planned = device::planned_bytes(
        &shape,
        from_gguf,
        &placement,
        spec.lora_rank,
        spec.batch_size,
        seq,
    );
    if planned > room {
        return Err(ApiError::invalid_param(
            "model",
            format!(
                "fine-tuning `{base}` needs about {:.2} GB (the planner's estimate for its trainer), more than the {:.2} GB of the memory budget that pinned models leave",
                planned as f64 / 1e9,
                room as f64 / 1e9
            ),
        ));
    }
    let _one_at_a_time = st.finetune.creating.lock().await;
    check_limits(&st, &id, est_tokens).await?;
    let job = FineTuneJob {
        id: format!("ftjob-{}", crate::random_id(24)),
        owner: id.name.clone(),
        owner_role: id.role,
        status: JobStatus::ValidatingFiles,
        base_model: base,
        fine_tuned_model: None,
        spec: serde_json::to_string(&spec).map_err(|e| ApiError::Internal(e.to_string()))?,
        error: None,
        trained_tokens: 0,
        planned_bytes: planned as i64,
        created_ms: now_ms(),
        started_ms: None,
        finished_ms: None,
        estimated_finish_ms: None,
        shared_groups: serde_json::to_string(&spec.shared_with_groups)
            .unwrap_or_else(|_| "[]".into()),
        deleted_ms: None,
    };
    st.gw.store.put_ft_job(&job).await.map_err(store_error)?;
    event(
        &st,
        &job.id,
        "info",
        &format!(
            "Created fine-tuning job {} ({} examples).",
            job.id, summary.examples
        ),
    )
    .await;
    st.finetune.wake.notify_one();
    ok(job_object(&job))
}

pub(super) fn base_names(ft: &FineTune) -> Vec<String> {
    let mut v: Vec<String> = ft.bases.keys().cloned().collect();
    v.sort();
    if v.is_empty() {
        v.push("none configured".into());
    }
    v
}

/// The tokens the plan sizes an example at: the longest example, bounded
/// at 2 characters a token (English runs about 4, code and CJK text
/// denser), plus the chat template; at most what the trainer keeps.
pub(super) fn example_tokens(longest_chars: usize, max_tokens: u32) -> u32 {
    ((longest_chars as f64 / 2.0) as u32 + 32).min(max_tokens)
}

/// `[[limits]]`: jobs at once, jobs per day, tokens trained per term.
pub(super) async fn check_limits(
    st: &Handle,
    id: &Identity,
    est_tokens: u64,
) -> Result<(), ApiError> {
    let eff = crate::limits::effective(&st.gw.limiter.rules(), id);
    let (day, _, term) = crate::limits::window_starts(now_ms(), st.gw.limiter.term_start_ms());
    let (today, unfinished, _) = st
        .gw
        .store
        .ft_usage_of(&id.name, day)
        .await
        .map_err(store_error)?;
    let (_, _, term_tokens) = st
        .gw
        .store
        .ft_usage_of(&id.name, term)
        .await
        .map_err(store_error)?;
    let at_once = eff
        .fine_tuning_jobs_at_once
        .unwrap_or(crate::limits::DEFAULT_FT_JOBS_AT_ONCE);
    if unfinished as u64 >= at_once {
        return Err(ApiError::RateLimited {
            message: format!(
                "you have {unfinished} fine-tuning jobs waiting or training; the limit is {at_once} at once: wait for one to finish or cancel it"
            ),
            code: "fine_tuning_jobs_at_once",
            retry_after_s: 60,
        });
    }
    let per_day = eff
        .fine_tuning_jobs_per_day
        .unwrap_or(crate::limits::DEFAULT_FT_JOBS_PER_DAY);
    if today as u64 >= per_day {
        return Err(ApiError::RateLimited {
            message: format!(
                "you created {today} fine-tuning jobs today; the limit is {per_day} a day"
            ),
            code: "fine_tuning_jobs_per_day",
            retry_after_s: 3600,
        });
    }
    let limit = eff
        .fine_tuning_tokens_per_term
        .unwrap_or(crate::limits::DEFAULT_FT_TOKENS_PER_TERM);
    if term_tokens.max(0) as u64 + est_tokens > limit {
        return Err(ApiError::Forbidden {
            message: format!(
                "this job would train about {est_tokens} tokens; your fine-tuning jobs trained {term_tokens} this term, of {limit} allowed"
            ),
            code: "fine_tuning_tokens_per_term",
            resets_at: None,
        });
    }
    Ok(())
}
