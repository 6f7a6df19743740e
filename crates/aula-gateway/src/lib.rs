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
        });
        let client = backend::http_client();
        let mut router = ModelRouter::default();
        let mut lifecycle = lifecycle::Lifecycle::new(sup, budget_bytes, load_timeout);
        for spec in specs {
            match spec.source {
                ModelSource::Url { base, parallel } => {
                    router.add(
                        &spec.name,
                        Arc::new(HttpBackend::new(
                            &spec.name,
                            Upstream::Ready(base),
                            client.clone(),
                        )),
                        fair::FairQueue::new(parallel.unwrap_or(URL_DEFAULT_SLOTS), access.fair),
                    );
                }
                ModelSource::Embedded {
                    gguf,
                    parallel,
                    context,
                    threads,
                } => {
                    let b = Arc::new(HttpBackend::new(
                        &spec.name,
                        Upstream::Stopped,
                        client.clone(),
                    ));
                    let queue = fair::FairQueue::new(
                        parallel.unwrap_or(EMBEDDED_DEFAULT_SLOTS),
                        access.fair,
                    );
                    router.add(&spec.name, b.clone(), queue.clone());
                    let planned = planned_bytes(&gguf, context, parallel);
                    let es = supervisor::EngineSpec {
                        name: spec.name.clone(),
                        gguf,
                        parallel,
                        context,
                        threads,
                    };
                    lifecycle.add(
                        es,
                        b,
                        queue,
                        spec.pinned,
                        spec.preload,
                        spec.keep_alive,
                        planned,
                    );
                }
            }
        }
        lifecycle.start_preloaded()?;
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
        Ok(Fleet { state, reaper })
    }

    /// Stop every engine child and wait until they are gone.
    pub async fn stop(self) {
        self.reaper.abort();
        self.state.lifecycle.stop_all().await;
    }
}
