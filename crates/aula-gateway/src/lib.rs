//! Aula's gateway: the OpenAI-compatible front door of a shared LLM box. It
//! owns admission; what is loaded where is the fleet's (`aula-fleet`).
//!
//! Request path: [`server`] (HTTP API) -> [`pipeline`]: [`auth`]
//! (who is asking) -> [`limits`] (quotas, reservations) -> [`fair`] (the
//! model's token-fair queue) -> [`router`] -> the fleet's engine client,
//! with every request in the ledger (`aula-store`) and in [`metrics`].
//! [`config`] reads `aula.toml`; [`home`] knows where Aula keeps its files;
//! [`start`] puts the router and the fleet together; [`app`] all of
//! `aula serve` (database, access, listener, tasks, ordered shutdown);
//! [`web`] the page at `/` for teachers and students, fed by [`live`].

pub mod app;
pub mod auth;
pub mod body;
pub mod config;
pub mod fair;
pub mod fields;
pub mod files;
pub mod finetune;
pub mod home;
pub mod identity;
pub mod limits;
pub mod live;
pub mod metrics;
pub mod page;
pub mod pipeline;
pub mod rag;
pub mod responses;
pub mod router;
pub mod scheduling;
pub mod server;
pub mod state;
pub mod training_file;
pub mod tuned;
pub mod web;
pub mod wire;

pub use aula_fleet::spec::ModelFacts;
use aula_fleet::tasks::Tasks;
use config::ModelSpec;
use router::ModelRouter;
use std::sync::Arc;

/// A random id of `len` ASCII letters and digits (request and file ids).
pub fn random_id(len: usize) -> String {
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Variables a helper process (the document extractor, the trainer) keeps
/// from the gateway's environment; everything else — API keys and database
/// passwords that `*_env` settings read, say — is not passed on.
const CHILD_ENV: [&str; 10] = [
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "LD_LIBRARY_PATH",
    "PYTHONPATH",
];
/// Prefixes of variables a helper keeps too: thread counts and CPU or GPU
/// selection for the numeric libraries the trainer uses.
const CHILD_ENV_PREFIXES: [&str; 8] = [
    "OMP_",
    "MKL_",
    "OPENBLAS_",
    "TORCH_",
    "CUDA_",
    "NVIDIA_",
    "HF_",
    "PYTORCH_",
];

/// Start `cmd` with only [`CHILD_ENV`] and [`CHILD_ENV_PREFIXES`] of this
/// process's environment.
pub fn child_env(cmd: &mut tokio::process::Command) {
    cmd.env_clear();
    for (k, v) in std::env::vars_os() {
        let Some(name) = k.to_str() else { continue };
        if CHILD_ENV.contains(&name) || CHILD_ENV_PREFIXES.iter().any(|p| name.starts_with(p)) {
            cmd.env(&k, &v);
        }
    }
}

/// The access side of the gateway: who may ask, how much, and the record.
pub struct Access {
    pub auth: auth::Authenticator,
    pub limiter: limits::Limiter,
    pub ledger: aula_store::Ledger,
    pub fair: fair::FairConfig,
    pub reload: Option<pipeline::Reload>,
    /// Users' records beyond the ledger (uploaded files).
    pub store: aula_store::Store,
    /// Where uploaded files' bytes live.
    pub files: files::Files,
    /// Vector stores: the embedding model and the ingestion workers.
    pub rag: rag::RagSettings,
    /// The web page: its public address and the Hub's sign-in.
    pub web: web::WebSettings,
    /// Fine-tuning: the trainer and its queue.
    pub finetune: finetune::FineTuneSettings,
    /// Whether this gateway schedules the engines (several gateways: the leader).
    pub scheduling: Arc<scheduling::Scheduling>,
}

/// Build the router and the fleet: a fair queue per model in front of the
/// engines the fleet plans for it; start the preloaded models that fit the
/// budget, with the fleet's loops under `tasks`.
pub fn start(
    specs: Vec<ModelSpec>,
    fleet: aula_fleet::Settings,
    access: Access,
    tasks: &Tasks,
) -> Result<state::GatewayState, String> {
    let mut builder = aula_fleet::FleetBuilder::new(fleet);
    let mut router = ModelRouter::default();
    let mut aliases = Vec::new();
    let mut rag = access.rag;
    if let Some(m) = &rag.embedding_model
        && !specs.iter().any(|s| &s.name == m)
    {
        return Err(format!("[rag] embedding_model: no model is named `{m}`"));
    }
    if rag.embedding_model.is_none() {
        rag.embedding_model = specs
            .iter()
            .find(|s| s.is_embedding())
            .map(|s| s.name.clone());
    }
    // Chat models on Aula's own engine, and vLLM models served from a local
    // Hugging Face directory, can be fine-tuned: their engines serve the
    // adapters fine-tuning writes (one loaded base for all).
    let mut bases = std::collections::HashMap::new();
    let mut specs = specs;
    let ft_on = access.finetune.is_enabled();
    for spec in specs.iter_mut() {
        if let aula_fleet::spec::ModelSource::Embedded {
            gguf, flags, facts, ..
        } = &mut spec.source
            && !facts.embedding
        {
            bases.insert(spec.name.clone(), finetune::Base::Gguf(gguf.clone()));
            if ft_on {
                flags.lora_dir = Some(access.finetune.adapters.join(&spec.name));
            }
        }
        if let aula_fleet::spec::ModelSource::External {
            kind: aula_protocol::admin::EngineKind::Vllm,
            model,
            lora_dir,
            ..
        } = &mut spec.source
            && std::path::Path::new(model.as_str())
                .join("config.json")
                .is_file()
        {
            bases.insert(
                spec.name.clone(),
                finetune::Base::Vllm(std::path::PathBuf::from(model.as_str())),
            );
            if ft_on {
                *lora_dir = Some(access.finetune.adapters.join(&spec.name));
            }
        }
    }
    for spec in specs {
        let embedding = spec.is_embedding();
        for a in &spec.aliases {
            aliases.push((a.clone(), spec.name.clone()));
        }
        let planned = builder.plan(&spec)?;
        let preempt = spec.preempt && !embedding;
        // An engine that pauses over-share users gets up to as many again
        // for users with nothing running (fair.rs), within what an `aula
        // engine` lets wait by default (`--queue 64`; more would be 503s).
        let room = if preempt { planned.slots.min(64) } else { 0 };
        let queue = fair::FairQueue::with_room(planned.slots, room, access.fair);
        let (upstream, context) = (planned.upstream_model.clone(), planned.context);
        let backend = builder.add(&spec, planned, queue.clone());
        router.add_as(&spec.name, &upstream, backend, queue);
        if embedding {
            router.set_embedding(&spec.name);
        }
        if preempt {
            router.set_preempt(&spec.name);
        }
        if let Some(c) = context {
            router.set_context(&spec.name, c);
        }
    }
    for (a, n) in aliases {
        router.alias(&a, &n);
    }
    let fleet = builder.start(tasks)?;
    let tuned = Arc::new(tuned::TunedModels::default());
    let gw = Arc::new(pipeline::Gateway {
        router,
        auth: access.auth,
        limiter: access.limiter,
        ledger: access.ledger,
        reload: access.reload,
        fleet,
        store: access.store,
        live: live::Live::default(),
        tuned: tuned.clone(),
        closing: Default::default(),
        scheduling: access.scheduling,
    });
    let st = state::GatewayState {
        gw: gw.clone(),
        files: Arc::new(access.files),
        rag: Arc::new(rag::Rag::new(rag)),
        web: Arc::new(web::Web::new(access.web, gw.store.clone())?),
        finetune: Arc::new(finetune::FineTune::new(access.finetune, bases, tuned)),
    };
    rag::start(&st.rag(), tasks);
    if st.finetune.enabled {
        finetune::worker::start(&st.finetune(), tasks);
    }
    tasks.spawn("live samples", gw.clone().sample_live());
    tasks.spawn("usage rollups", roll_up_usage(gw.store.clone()));
    Ok(st)
}

/// Keep the ledger's daily rollups current: at start, then every ten minutes.
async fn roll_up_usage(store: aula_store::Store) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match store.roll_up_usage(aula_store::now_ms()).await {
            Ok(0) => {}
            Ok(days) => tracing::info!("usage: {days} more days rolled up"),
            Err(e) => tracing::warn!(
                "usage rollup failed (usage is read from the raw ledger meanwhile): {e}"
            ),
        }
    }
}

#[cfg(test)]
mod child_env_tests {
    /// Issue 30, finding 9: helpers no longer inherit the gateway's secrets.
    #[test]
    fn helpers_get_only_the_listed_variables() {
        // SAFETY: a variable only this test reads, set before it is read.
        unsafe { std::env::set_var("AULA_TEST_SECRET_KEY_ENV", "s3cret") };
        let mut cmd = tokio::process::Command::new("true");
        super::child_env(&mut cmd);
        let names: Vec<String> = cmd
            .as_std()
            .get_envs()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n == "AULA_TEST_SECRET_KEY_ENV"),
            "{names:?}"
        );
        if std::env::var_os("PATH").is_some() {
            assert!(names.iter().any(|n| n == "PATH"), "{names:?}");
        }
    }
}

#[cfg(test)]
mod layout_tests;
