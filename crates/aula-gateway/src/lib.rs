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
use tokio::sync::watch;

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
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    /// Build the router and start one supervised engine per embedded model.
    /// `exe` is the `aula` binary used for `aula engine` children.
    pub fn start(specs: Vec<ModelSpec>, exe: PathBuf, logs: PathBuf, access: Access) -> Fleet {
        let (tx, rx) = watch::channel(false);
        let sup = Arc::new(supervisor::Supervisor {
            exe,
            logs,
            shutdown: rx,
            ready_timeout: Duration::from_secs(300),
        });
        let client = backend::http_client();
        let mut router = ModelRouter::default();
        let mut tasks = Vec::new();
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
                        Upstream::Starting,
                        client.clone(),
                    ));
                    router.add(
                        &spec.name,
                        b.clone(),
                        fair::FairQueue::new(
                            parallel.unwrap_or(EMBEDDED_DEFAULT_SLOTS),
                            access.fair,
                        ),
                    );
                    let es = supervisor::EngineSpec {
                        name: spec.name.clone(),
                        gguf,
                        parallel,
                        context,
                        threads,
                    };
                    tasks.push(tokio::spawn(sup.clone().keep_running(es, b)));
                }
            }
        }
        Fleet {
            state: Arc::new(server::GatewayState {
                router,
                auth: access.auth,
                limiter: access.limiter,
                ledger: access.ledger,
                reload: access.reload,
            }),
            shutdown: tx,
            tasks,
        }
    }

    /// Stop every engine child and wait until they are gone.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
