//! Aula's gateway: the OpenAI-compatible front door of a shared LLM box.
//!
//! Request path: [`server`] (HTTP API) -> [`router`] (model name -> backend)
//! -> [`backend`] (engine client). Engines are processes: embedded ones are
//! started and watched by [`supervisor`]; `url` ones are already running.
//! [`config`] reads `aula.toml`; [`home`] knows where Aula keeps its files.

pub mod backend;
pub mod config;
pub mod fair;
pub mod home;
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

/// Everything `aula serve` starts besides the listener.
pub struct Fleet {
    pub state: Arc<server::GatewayState>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    /// Build the router and start one supervised engine per embedded model.
    /// `exe` is the `aula` binary used for `aula engine` children.
    pub fn start(specs: Vec<ModelSpec>, exe: PathBuf, logs: PathBuf) -> Fleet {
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
                ModelSource::Url { base } => {
                    router.add(
                        &spec.name,
                        Arc::new(HttpBackend::new(
                            &spec.name,
                            Upstream::Ready(base),
                            client.clone(),
                        )),
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
                    router.add(&spec.name, b.clone());
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
            state: Arc::new(server::GatewayState { router }),
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
