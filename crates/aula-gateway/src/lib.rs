//! Aula's gateway: the OpenAI-compatible front door of a shared LLM box.
//!
//! Request path: [`server`] (HTTP API) -> [`pipeline`]: [`auth`]
//! (who is asking) -> [`limits`] (quotas, reservations) -> [`fair`] (the
//! model's token-fair queue) -> [`router`] / [`backend`] (engine client),
//! with every request in the ledger (`aula-store`) and in [`metrics`].
//! Engines are processes: embedded ones are started and watched by
//! [`supervisor`]; `url` ones are already running. [`config`] reads
//! `aula.toml`; [`home`] knows where Aula keeps its files.

pub mod auth;
pub mod backend;
pub mod config;
pub mod fair;
pub mod home;
pub mod identity;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod pipeline;
pub mod router;
pub mod server;
pub mod supervisor;
pub mod timetable;

use backend::{HttpBackend, Upstream};
use config::{ModelSource, ModelSpec};
use router::ModelRouter;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Slots Aula gives a `url` engine whose entry sets no `parallel`.
pub const URL_DEFAULT_SLOTS: usize = 16;
/// Slots of an embedded engine whose entry sets no `parallel` (`aula engine`'s default).
pub const EMBEDDED_DEFAULT_SLOTS: usize = 4;

/// The access side of the gateway: who may ask, how much, and the record.
pub struct Access {
    pub auth: auth::Authenticator,
    pub limiter: limits::Limiter,
    pub ledger: aula_store::Ledger,
    pub fair: fair::FairConfig,
    pub reload: Option<server::Reload>,
}

/// Everything `aula serve` starts besides the listener.
pub struct Fleet {
    pub state: Arc<server::GatewayState>,
    reaper: tokio::task::JoinHandle<()>,
    health: Vec<tokio::task::JoinHandle<()>>,
}

/// Most sequences an embedded embedding model batches together
/// (`aula engine` uses 16 x `parallel`, at most this many).
pub const EMBEDDING_MAX_SLOTS: usize = 64;

/// Is this GGUF an embedding model (its architecture pools token states
/// into one vector)? Such a model serves /v1/embeddings and no chat.
pub fn is_embedding_model(gguf: &std::path::Path) -> bool {
    aula_planner::gguf::GgufFile::open(gguf)
        .ok()
        .and_then(|f| f.arch_u64("pooling_type"))
        .is_some_and(|p| p > 0)
}

/// The slots (requests at once) of an embedded engine: for an embedding
/// model, the sequences its engine batches together.
pub fn embedded_slots(gguf: &std::path::Path, parallel: Option<usize>) -> usize {
    let p = parallel.unwrap_or(EMBEDDED_DEFAULT_SLOTS);
    if is_embedding_model(gguf) {
        (p * 16).clamp(1, EMBEDDING_MAX_SLOTS)
    } else {
        p
    }
}

/// What the planner says an embedded model will allocate at its settings
/// (the file's size when its header cannot be read: the engine will say why).
pub fn planned_bytes(gguf: &std::path::Path, context: Option<u32>, parallel: Option<usize>) -> u64 {
    let plan = || -> Result<u64, String> {
        let file = aula_planner::gguf::GgufFile::open(gguf).map_err(|e| e.to_string())?;
        let shape = aula_planner::shape::ModelShape::from_gguf("model", &file)?;
        let trained = if shape.max_context > 0 {
            shape.max_context
        } else {
            4096
        };
        let settings = aula_planner::llamacpp::EngineSettings {
            context: context.unwrap_or(trained.min(4096)),
            parallel: parallel.unwrap_or(EMBEDDED_DEFAULT_SLOTS) as u32,
            ..Default::default()
        };
        Ok(aula_planner::llamacpp::memory(&shape, &settings).total_bytes)
    };
    plan().unwrap_or_else(|e| {
        tracing::warn!("cannot plan {}: {e}", gguf.display());
        std::fs::metadata(gguf).map(|m| m.len()).unwrap_or(0)
    })
}

/// The planned size of an external engine and, for vLLM and SGLang, its
/// share of the device (`--gpu-memory-utilization` / `--mem-fraction-static`).
fn plan_external(
    kind: config::ExternalKind,
    model: &str,
    precision: Option<&str>,
    plan_as: Option<&str>,
    context: u32,
    slots: usize,
    device_bytes: u64,
) -> Result<(u64, f64), String> {
    use aula_planner::estimate::{Engine, PlanRequest, Precision};
    if kind == config::ExternalKind::LlamaServer {
        return Ok((
            planned_bytes(std::path::Path::new(model), Some(context), Some(slots)),
            0.0,
        ));
    }
    let local = std::path::Path::new(model).join("config.json");
    let shape = if let Some(id) = plan_as {
        aula_planner::catalog::find(id)?
    } else if local.exists() {
        aula_planner::hf::read(&local)?
    } else {
        return Err(format!(
            "cannot plan `{model}`: there is no {} ; set `plan_as` to a catalog id (see `aula plan --list`)",
            local.display()
        ));
    };
    // A pre-quantized checkpoint's shape carries its files' size; others are
    // sized at `precision`, or when it is unset at the precision the model
    // was released in (gpt-oss: MXFP4), else bf16.
    let precision = Precision::parse(precision.or(shape.released_as.as_deref()).unwrap_or("bf16"))?;
    let mut hw = aula_planner::hardware::detect();
    hw.usable_gb = device_bytes as f64 / 1e9;
    hw.memory_gb = hw.memory_gb.max(hw.usable_gb);
    let want = aula_planner::placement::Want {
        shape,
        request: PlanRequest {
            engine: if kind == config::ExternalKind::Vllm {
                Engine::Vllm
            } else {
                Engine::Sglang
            },
            precision,
            context,
            users: slots as u32,
            ..Default::default()
        },
    };
    let p = aula_planner::placement::place(&[want], &hw);
    let bytes = p.models.first().map(|m| m.bytes).unwrap_or(0);
    let share = (bytes as f64 / device_bytes.max(1) as f64 * 100.0).ceil() / 100.0;
    Ok((bytes, share.min(1.0)))
}

/// The command line of an external engine, with `{port}` for Aula's port.
#[allow(clippy::too_many_arguments)]
fn external_command(
    kind: config::ExternalKind,
    name: &str,
    model: &str,
    command: Option<String>,
    context: u32,
    slots: usize,
    share: f64,
    extra: Vec<String>,
) -> (String, Vec<String>) {
    let s = |x: &str| x.to_string();
    let (program, mut args) = match kind {
        config::ExternalKind::Vllm => (
            command.unwrap_or_else(|| s("vllm")),
            vec![
                s("serve"),
                s(model),
                s("--host"),
                s("127.0.0.1"),
                s("--port"),
                s("{port}"),
                s("--served-model-name"),
                s(name),
                s("--max-model-len"),
                context.to_string(),
                s("--max-num-seqs"),
                slots.to_string(),
                s("--gpu-memory-utilization"),
                format!("{share:.2}"),
            ],
        ),
        config::ExternalKind::LlamaServer => (
            command.unwrap_or_else(|| s("llama-server")),
            vec![
                s("-m"),
                s(model),
                s("--host"),
                s("127.0.0.1"),
                s("--port"),
                s("{port}"),
                s("--alias"),
                s(name),
                s("-c"),
                (u64::from(context) * slots as u64).to_string(),
                s("-np"),
                slots.to_string(),
                s("-ngl"),
                s("999"),
            ],
        ),
        config::ExternalKind::Sglang => (
            command.unwrap_or_else(|| s("python3 -m sglang.launch_server")),
            vec![
                s("--model-path"),
                s(model),
                s("--host"),
                s("127.0.0.1"),
                s("--port"),
                s("{port}"),
                s("--served-model-name"),
                s(name),
                s("--context-length"),
                context.to_string(),
                s("--max-running-requests"),
                slots.to_string(),
                s("--mem-fraction-static"),
                format!("{share:.2}"),
            ],
        ),
    };
    args.extend(extra);
    (program, args)
}

/// Register a model whose engines Aula starts: `copies` engines from
/// `template` (one per replica), behind one backend (a pool when several)
/// and one queue of `slots` x `copies`, managed by the lifecycle at
/// `planned_each` x `copies` bytes.
#[allow(clippy::too_many_arguments)]
fn add_started(
    router: &mut ModelRouter,
    lifecycle: &mut lifecycle::Lifecycle,
    spec: &ModelSpec,
    template: supervisor::EngineSpec,
    slots: usize,
    planned_each: u64,
    fair: fair::FairConfig,
    client: &backend::HttpClient,
) {
    let copies = spec.replicas.max(1);
    let queue = fair::FairQueue::new(slots * copies, fair);
    let engines: Vec<(supervisor::EngineSpec, Arc<HttpBackend>)> = (0..copies)
        .map(|replica| {
            (
                supervisor::EngineSpec {
                    replica,
                    ..template.clone()
                },
                Arc::new(HttpBackend::new(
                    &spec.name,
                    Upstream::Stopped,
                    client.clone(),
                )),
            )
        })
        .collect();
    let backend: Arc<dyn backend::Backend> = match engines.as_slice() {
        [(_, one)] => one.clone(),
        _ => Arc::new(backend::Pool::new(
            &spec.name,
            engines.iter().map(|(_, b)| b.clone()).collect(),
        )),
    };
    router.add(&spec.name, backend, queue.clone());
    lifecycle.add(
        engines,
        queue,
        spec.pinned,
        spec.preload,
        spec.keep_alive,
        planned_each * copies as u64,
    );
}

impl Fleet {
    /// Build the router and the lifecycle of the embedded models, and start
    /// those that are preloaded and fit `budget_bytes`. `exe` is the `aula`
    /// binary used for `aula engine` children.
    pub fn start(
        specs: Vec<ModelSpec>,
        exe: PathBuf,
        logs: PathBuf,
        access: Access,
        budget_bytes: u64,
        load_timeout: Duration,
    ) -> Result<Fleet, String> {
        let sup = Arc::new(supervisor::Supervisor {
            exe,
            logs,
            ready_timeout: Duration::from_secs(300),
            // AULA_ENGINE_LIVENESS_S shortens it (tests) or lengthens it.
            liveness: std::env::var("AULA_ENGINE_LIVENESS_S")
                .ok()
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|s| *s >= 0.3)
                .map(Duration::from_secs_f64)
                .unwrap_or(supervisor::LIVENESS_INTERVAL),
        });
        let client = backend::http_client();
        let mut router = ModelRouter::default();
        let mut lifecycle = lifecycle::Lifecycle::new(sup, budget_bytes, load_timeout);
        let mut health_checks = Vec::new();
        let mut aliases = Vec::new();
        for spec in specs {
            for a in &spec.aliases {
                aliases.push((a.clone(), spec.name.clone()));
            }
            match spec.source.clone() {
                ModelSource::Url {
                    bases,
                    upstream_model,
                    parallel,
                } => {
                    let replicas =
                        Arc::new(backend::Pool::of_urls(&spec.name, &bases, client.clone()));
                    health_checks.push(replicas.clone());
                    router.add_as(
                        &spec.name,
                        upstream_model.as_deref().unwrap_or(&spec.name),
                        replicas,
                        fair::FairQueue::new(
                            parallel.unwrap_or(URL_DEFAULT_SLOTS) * bases.len().max(1),
                            access.fair,
                        ),
                    );
                }
                ModelSource::Embedded {
                    gguf,
                    parallel,
                    context,
                    threads,
                } => {
                    let planned = planned_bytes(&gguf, context, parallel);
                    let slots = embedded_slots(&gguf, parallel);
                    let template = supervisor::EngineSpec {
                        name: spec.name.clone(),
                        gguf,
                        parallel,
                        context,
                        threads,
                        launch: None,
                        kind: "embedded",
                        replica: 0,
                    };
                    add_started(
                        &mut router,
                        &mut lifecycle,
                        &spec,
                        template,
                        slots,
                        planned,
                        access.fair,
                        &client,
                    );
                    if let Some(c) = context {
                        router.set_context(&spec.name, c);
                    }
                }
                ModelSource::External {
                    kind,
                    model,
                    command,
                    parallel,
                    context,
                    extra_args,
                    precision,
                    plan_as,
                } => {
                    let n = parallel.unwrap_or(match kind {
                        config::ExternalKind::LlamaServer => EMBEDDED_DEFAULT_SLOTS,
                        _ => URL_DEFAULT_SLOTS,
                    });
                    let c = context.unwrap_or(4096);
                    let (planned, share) = plan_external(
                        kind,
                        &model,
                        precision.as_deref(),
                        plan_as.as_deref(),
                        c,
                        n,
                        budget_bytes,
                    )
                    .map_err(|e| format!("model `{}`: {e}", spec.name))?;
                    let launch = external_command(
                        kind, &spec.name, &model, command, c, n, share, extra_args,
                    );
                    tracing::info!(model = %spec.name, "planned {:.2} GB: {} {}", planned as f64 / 1e9, launch.0, supervisor::redact_args(&launch.1).join(" "));
                    if kind == config::ExternalKind::Sglang
                        && !launch.1.iter().any(|a| a.contains("{api_key}"))
                    {
                        tracing::warn!(model = %spec.name,
                            "SGLang reads its API key only from its command line, where Aula puts no secrets: \
                             this engine's loopback port answers anyone on this machine (add \"--api-key\", \"{{api_key}}\" \
                             to extra_args to require the key, at the price of showing it in the process list)");
                    }
                    let template = supervisor::EngineSpec {
                        name: spec.name.clone(),
                        gguf: PathBuf::from(&model),
                        parallel: Some(n),
                        context: Some(c),
                        threads: None,
                        launch: Some(launch),
                        kind: kind.as_str(),
                        replica: 0,
                    };
                    add_started(
                        &mut router,
                        &mut lifecycle,
                        &spec,
                        template,
                        n,
                        planned,
                        access.fair,
                        &client,
                    );
                    router.set_context(&spec.name, c);
                }
            }
        }
        for (a, n) in aliases {
            router.alias(&a, &n);
        }
        lifecycle.start_preloaded()?;
        let health: Vec<tokio::task::JoinHandle<()>> = health_checks
            .into_iter()
            .map(|r| tokio::spawn(r.health_loop(Duration::from_secs(5))))
            .collect();
        let state = Arc::new(server::GatewayState {
            router,
            auth: access.auth,
            limiter: access.limiter,
            ledger: access.ledger,
            reload: access.reload,
            lifecycle,
        });
        let st = state.clone();
        let reaper = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                st.lifecycle.reap_idle().await;
            }
        });
        Ok(Fleet {
            state,
            reaper,
            health,
        })
    }

    /// Stop every engine child and wait until they are gone.
    pub async fn stop(self) {
        self.reaper.abort();
        for h in &self.health {
            h.abort();
        }
        self.state.lifecycle.stop_all().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vLLM engine for gpt-oss-120b with no `precision` is planned as
    /// released (MXFP4 experts, about 65 GB of weights), not at BF16.
    #[test]
    fn external_engines_default_to_the_released_precision() {
        let device = 119_600_000_000;
        let plan = |precision| {
            plan_external(
                config::ExternalKind::Vllm,
                "openai/gpt-oss-120b",
                precision,
                Some("gpt-oss-120b"),
                8192,
                16,
                device,
            )
        };
        let Ok((bytes, share)) = plan(None) else {
            panic!("gpt-oss-120b could not be planned");
        };
        assert!(bytes > 65_000_000_000 && bytes < device, "{bytes}");
        assert!(share > 0.5 && share < 1.0, "{share}");
        let Ok((bf16, _)) = plan(Some("bf16")) else {
            panic!("gpt-oss-120b at bf16 could not be planned");
        };
        assert!(bf16 > bytes, "{bf16} vs {bytes}");
    }
}
