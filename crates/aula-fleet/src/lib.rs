//! Aula's control plane: which models are served by which engines, which
//! of them are loaded within the memory budget, and where each stands.
//!
//! * [`spec`]: what to serve (one typed [`spec::ModelSpec`] per model);
//! * [`launch`]: sizing an engine (the planner's settings) and its command line;
//! * [`supervisor`]: engine processes — start, health, restart, stop;
//! * [`lifecycle`]: the budget — load on demand, evict, stop when idle;
//! * [`backend`]: the engine client (the `Backend` seam, pools, health probes);
//! * [`host`]: the machine, read from the OS and NVML;
//! * [`tasks`]: the one owner of background loops and shutdown;
//! * [`timetable`]: loading models before a lesson.
//!
//! Its state is typed ([`aula_protocol::admin::ModelState`]) and observable:
//! [`Fleet::ps`] is the one snapshot `/readyz`, `/admin/ps` and `aula ps`
//! read, and [`Fleet::subscribe`] wakes a watcher on every change. The
//! gateway owns admission: it gives the fleet a [`Queue`] per model, whose
//! load the fleet reads (a busy model is never evicted) but never changes.

pub mod adapters;
pub mod backend;
pub mod host;
pub mod launch;
pub mod lifecycle;
pub mod spec;
pub mod supervisor;
pub mod tasks;
pub mod timetable;

use aula_protocol::ApiError;
use aula_protocol::admin::{EngineKind, ModelState, PsRow};
use backend::{Backend, HttpBackend, HttpClient, Pool, Upstream};
use launch::Launch;
use spec::{ModelSource, ModelSpec};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tasks::Tasks;
use tokio::sync::watch;

/// How full a model's queue is.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueStats {
    pub slots: usize,
    pub busy: usize,
    pub queued: usize,
}

/// The admission queue in front of a model, as the fleet sees it.
pub trait Queue: Send + Sync {
    fn stats(&self) -> QueueStats;
}

/// What a model needs before the gateway builds its queue.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Requests at once, over all its replicas.
    pub slots: usize,
    /// Tokens per request its engine holds, when Aula started it with that context.
    pub context: Option<u32>,
    /// The name its engine knows it by.
    pub upstream_model: String,
    how: How,
}

#[derive(Debug, Clone)]
enum How {
    /// Servers run elsewhere.
    Remote {
        bases: Vec<String>,
        key: Option<String>,
    },
    /// Engines Aula starts: one per replica from this template.
    Started {
        template: supervisor::EngineSpec,
        planned_each: u64,
    },
}

/// A `url` model: servers run elsewhere, health-checked.
struct Remote {
    name: String,
    pool: Arc<Pool>,
    queue: Arc<dyn Queue>,
}

/// Builds a [`Fleet`] model by model.
pub struct FleetBuilder {
    client: HttpClient,
    lifecycle: lifecycle::Lifecycle,
    remote: Vec<Remote>,
}

/// Where engine processes come from and how long they may take.
pub struct Settings {
    /// The `aula` binary, for `aula engine` children.
    pub exe: PathBuf,
    /// Where engine logs go.
    pub logs: PathBuf,
    /// Bytes the engines Aula starts may take together.
    pub budget_bytes: u64,
    /// How long a request waits for its model to load.
    pub load_timeout: Duration,
}

impl FleetBuilder {
    pub fn new(settings: Settings) -> FleetBuilder {
        let sup = Arc::new(supervisor::Supervisor {
            exe: settings.exe,
            logs: settings.logs,
            ready_timeout: Duration::from_secs(300),
            // AULA_ENGINE_LIVENESS_S shortens it (tests) or lengthens it.
            liveness: std::env::var("AULA_ENGINE_LIVENESS_S")
                .ok()
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|s| *s >= 0.3)
                .map(Duration::from_secs_f64)
                .unwrap_or(supervisor::LIVENESS_INTERVAL),
        });
        FleetBuilder {
            client: backend::http_client(),
            lifecycle: lifecycle::Lifecycle::new(sup, settings.budget_bytes, settings.load_timeout),
            remote: Vec::new(),
        }
    }

    /// Size a model: its slots, context and, for engines Aula starts, the
    /// command and the memory the planner gives it.
    pub fn plan(&self, spec: &ModelSpec) -> Result<Planned, String> {
        let copies = spec.replicas.max(1);
        let started = |template, slots: usize, planned_each, context| Planned {
            slots: slots * copies,
            context,
            upstream_model: spec.name.clone(),
            how: How::Started {
                template,
                planned_each,
            },
        };
        Ok(match spec.source.clone() {
            ModelSource::Url {
                bases,
                upstream_model,
                parallel,
                key_env,
            } => {
                // Read when serving (commands like `aula users` need no key).
                let key = match key_env {
                    Some(v) => match std::env::var(&v) {
                        Ok(k) if !k.is_empty() => Some(k),
                        _ => {
                            return Err(format!(
                                "model `{}`: api_key_env: the environment variable `{v}` (the key its servers require) is not set",
                                spec.name
                            ));
                        }
                    },
                    None => None,
                };
                Planned {
                    slots: parallel.unwrap_or(launch::URL_DEFAULT_SLOTS) * bases.len().max(1),
                    context: None,
                    upstream_model: upstream_model.unwrap_or_else(|| spec.name.clone()),
                    how: How::Remote { bases, key },
                }
            }
            ModelSource::Embedded {
                gguf,
                facts,
                parallel,
                context,
                threads,
                flags,
            } => {
                let planned = launch::planned_bytes_with(&gguf, context, parallel, &flags);
                let slots = launch::embedded_slots(facts, parallel);
                let template = supervisor::EngineSpec {
                    name: spec.name.clone(),
                    launch: Launch::Embedded {
                        gguf,
                        parallel,
                        context,
                        threads,
                        flags,
                    },
                    kind: EngineKind::Embedded,
                    replica: 0,
                    lora_dir: None,
                };
                started(template, slots, planned, context)
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
                lora_dir,
            } => {
                let n = parallel.unwrap_or(match kind {
                    EngineKind::LlamaServer => launch::EMBEDDED_DEFAULT_SLOTS,
                    _ => launch::URL_DEFAULT_SLOTS,
                });
                let c = context.unwrap_or(4096);
                let (planned, settings) = launch::plan_external(
                    kind,
                    &model,
                    precision.as_deref(),
                    plan_as.as_deref(),
                    c,
                    n,
                    self.lifecycle.budget_bytes,
                )
                .map_err(|e| format!("model `{}`: {e}", spec.name))?;
                let lora_dir = lora_dir.filter(|_| kind == EngineKind::Vllm);
                let mut extra_args = extra_args;
                if lora_dir.is_some() {
                    extra_args.splice(0..0, adapters::vllm_args());
                }
                let launch =
                    launch::external(kind, &spec.name, &model, command, &settings, extra_args);
                if let Launch::External { program, args } = &launch {
                    tracing::info!(model = %spec.name, "planned {:.2} GB: {program} {}",
                        planned as f64 / 1e9, supervisor::redact_args(args).join(" "));
                    if kind == EngineKind::Sglang && !args.iter().any(|a| a.contains("{api_key}")) {
                        tracing::warn!(model = %spec.name,
                            "SGLang reads its API key only from its command line, where Aula puts no secrets: \
                             this engine's loopback port answers anyone on this machine (add \"--api-key\", \"{{api_key}}\" \
                             to extra_args to require the key, at the price of showing it in the process list)");
                    }
                }
                let template = supervisor::EngineSpec {
                    name: spec.name.clone(),
                    launch,
                    kind,
                    replica: 0,
                    lora_dir,
                };
                started(template, n, planned, Some(c))
            }
        })
    }

    /// Add a planned model with the queue the gateway put in front of it;
    /// returns the backend requests for it go to.
    pub fn add(
        &mut self,
        spec: &ModelSpec,
        planned: Planned,
        queue: Arc<dyn Queue>,
    ) -> Arc<dyn Backend> {
        match planned.how {
            How::Remote { bases, key } => {
                let pool = Arc::new(Pool::of_urls(&spec.name, &bases, self.client.clone()));
                pool.set_secret(key);
                self.remote.push(Remote {
                    name: spec.name.clone(),
                    pool: pool.clone(),
                    queue,
                });
                pool
            }
            How::Started {
                template,
                planned_each,
            } => {
                let copies = spec.replicas.max(1);
                let changes = self.lifecycle.changes();
                let engines: Vec<(supervisor::EngineSpec, Arc<HttpBackend>)> = (0..copies)
                    .map(|replica| {
                        let backend =
                            HttpBackend::new(&spec.name, Upstream::Stopped, self.client.clone())
                                .notifying(changes.clone());
                        (
                            supervisor::EngineSpec {
                                replica,
                                ..template.clone()
                            },
                            Arc::new(backend),
                        )
                    })
                    .collect();
                let backend: Arc<dyn Backend> = match engines.as_slice() {
                    [(_, one)] => one.clone(),
                    _ => Arc::new(Pool::new(
                        &spec.name,
                        engines.iter().map(|(_, b)| b.clone()).collect(),
                    )),
                };
                self.lifecycle.add(lifecycle::Member {
                    engines,
                    queue,
                    pinned: spec.pinned,
                    preload: spec.preload,
                    keep_alive: spec.keep_alive,
                    planned_bytes: planned_each * copies as u64,
                });
                backend
            }
        }
    }

    /// Start the preloaded models that fit, and the fleet's loops (idle
    /// reaper, health checks of `url` servers) under `tasks`.
    pub fn start(self, tasks: &Tasks) -> Result<Arc<Fleet>, String> {
        self.lifecycle.start_preloaded()?;
        for r in &self.remote {
            tasks.spawn(
                "health checks",
                r.pool.clone().health_loop(Duration::from_secs(5)),
            );
        }
        let fleet = Arc::new(Fleet {
            lifecycle: self.lifecycle,
            remote: self.remote,
        });
        let f = fleet.clone();
        tasks.spawn("idle reaper", async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                f.lifecycle.reap_idle().await;
            }
        });
        Ok(fleet)
    }
}

/// Every model the gateway serves, and the engines Aula runs for them.
pub struct Fleet {
    lifecycle: lifecycle::Lifecycle,
    remote: Vec<Remote>,
}

impl Fleet {
    /// The bytes the engines Aula starts may take together.
    pub fn budget_bytes(&self) -> u64 {
        self.lifecycle.budget_bytes
    }

    /// Mark a model in use for one request (admission to end); None for
    /// models Aula does not start.
    pub fn enter(&self, name: &str) -> Option<lifecycle::InUse> {
        self.lifecycle.enter(name)
    }

    /// Load the model if Aula starts it and it is not loaded, and wait
    /// (bounded) until it is ready.
    pub async fn ensure_loaded(&self, name: &str) -> Result<(), ApiError> {
        self.lifecycle.ensure_loaded(name).await
    }

    /// Load a LoRA adapter into every running engine of `model` (vLLM's
    /// run-time adapters, crate::adapters); one not running loads it from
    /// its adapter directory when it starts.
    pub async fn load_adapter(
        &self,
        model: &str,
        name: &str,
        path: &std::path::Path,
    ) -> Result<(), String> {
        for (base, b) in self.lifecycle.ready_engines(model) {
            adapters::load(b.client(), &base, b.secret().as_deref(), name, path).await?;
        }
        Ok(())
    }

    /// Unload a LoRA adapter from every running engine of `model`.
    pub async fn unload_adapter(&self, model: &str, name: &str) -> Result<(), String> {
        for (base, b) in self.lifecycle.ready_engines(model) {
            adapters::unload(b.client(), &base, b.secret().as_deref(), name).await?;
        }
        Ok(())
    }

    /// Load a model Aula starts, now.
    pub async fn load(&self, name: &str) -> Result<(), ApiError> {
        self.lifecycle.load(name).await
    }

    /// Stop a model's engines and wait until they are gone.
    pub async fn unload(&self, name: &str) -> Result<(), ApiError> {
        self.lifecycle.stop(name).await
    }

    /// Hold part of the budget for a trainer (evicting idle models; waiting
    /// while the rest are busy) until the value is dropped.
    pub async fn reserve(
        &self,
        what: &str,
        bytes: u64,
    ) -> Result<lifecycle::Reservation, ApiError> {
        self.lifecycle.reserve(what, bytes).await
    }

    /// What the pinned models take: the part of the budget no trainer gets.
    pub fn pinned_bytes(&self) -> u64 {
        self.lifecycle.pinned_bytes()
    }

    /// Memory held outside the engines.
    pub fn holds(&self) -> Vec<aula_protocol::admin::MemoryHold> {
        self.lifecycle.holds()
    }

    /// Count `bytes` more for a model (its adapters).
    pub fn set_extra_bytes(&self, name: &str, bytes: u64) {
        self.lifecycle.set_extra_bytes(name, bytes);
    }

    /// Restart a model's engines when idle, so they read their adapters again.
    pub async fn restart_when_idle(&self, name: &str) -> Result<(), ApiError> {
        self.lifecycle.restart_when_idle(name).await
    }

    /// Stop every engine and wait until they are gone.
    pub async fn stop_all(&self) {
        self.lifecycle.stop_all().await;
    }

    /// Wakes on every change of an engine's state (and when a model falls idle).
    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.lifecycle.changes().subscribe()
    }

    /// Every model, as the admin API shows it: those Aula starts, then `url` ones.
    pub fn ps(&self) -> Vec<PsRow> {
        let mut rows = self.lifecycle.ps();
        for r in &self.remote {
            let q = r.queue.stats();
            rows.push(PsRow {
                model: r.name.clone(),
                engine: EngineKind::Url,
                state: if r.pool.address().is_some() {
                    ModelState::Ready
                } else {
                    ModelState::Unreachable
                },
                pinned: false,
                keep_alive_s: None,
                planned_bytes: None,
                actual_bytes: None,
                slots: q.slots,
                busy: q.busy,
                queued: q.queued,
                active_requests: 0,
                idle_s: None,
                load_time_s: None,
                device_bytes: Default::default(),
                layers_offloaded: None,
            });
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A trainer's hold follows its measured footprint: shrinking it lets a
    /// reservation that was waiting for room go.
    #[tokio::test]
    async fn a_hold_set_to_its_measured_size_frees_the_rest() {
        let tasks = tasks::Tasks::new();
        let fleet = FleetBuilder::new(Settings {
            exe: "aula".into(),
            logs: std::env::temp_dir(),
            budget_bytes: 10_000_000_000,
            load_timeout: Duration::from_secs(1),
        })
        .start(&tasks)
        .unwrap();
        let first = fleet.reserve("job 1", 6_000_000_000).await.unwrap();
        let f2 = fleet.clone();
        let second = tokio::spawn(async move { f2.reserve("job 2", 7_000_000_000).await });
        tokio::task::yield_now().await;
        assert!(!second.is_finished());
        first.set_bytes(2_500_000_000);
        let second = tokio::time::timeout(Duration::from_secs(60), second)
            .await
            .expect("the shrunk hold did not let the waiting reservation go")
            .unwrap()
            .unwrap();
        let mut held: Vec<u64> = fleet.holds().iter().map(|h| h.bytes).collect();
        held.sort();
        assert_eq!(held, vec![2_500_000_000, 7_000_000_000]);
        drop(second);
        drop(first);
        assert!(fleet.holds().is_empty());
    }
}
