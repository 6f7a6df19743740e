//! `aula serve`: the gateway and its fleet, until SIGINT or SIGTERM.

use super::{is_loopback, load_config, open_store, shutdown_signal};
use crate::cli::ServeArgs;
use anyhow::{Context, anyhow, bail};
use aula_fleet::tasks::Tasks;
use aula_gateway::config::Config;
use aula_gateway::home;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

pub async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    // What the gateway and its engines write — the database and its WAL, key
    // hashes, the ledger, engine logs — is readable by the service's user
    // only (a shared box has students with shells).
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
    let (config, config_path) = load_config(a.config.as_deref())?;
    let specs = config
        .model_specs(&home::models_dir())
        .map_err(|e| anyhow!(e))?;
    let host = a
        .host
        .or(config.server.host.clone())
        .unwrap_or_else(|| "127.0.0.1".into());
    let port = a.port.or(config.server.port).unwrap_or(8080);
    let loopback = is_loopback(&host);

    let store = open_store(&config).await?;
    let hub = config.hub().map_err(|e| anyhow!(e))?;
    let client = aula_fleet::backend::http_client();
    let local_admin = aula_gateway::home::ensure_local_admin_token().map_err(|e| {
        anyhow!(
            "cannot write the local admin token {}: {e}",
            aula_gateway::home::local_admin_token_path().display()
        )
    })?;
    let auth = aula_gateway::auth::Authenticator::new(
        store.clone(),
        aula_gateway::auth::AuthSettings {
            hub,
            trusted: config.auth.trusted.clone(),
            jwt: config.auth.jwt().map_err(|e| anyhow!(e))?,
            allow_open: loopback || a.insecure_no_auth,
            local_admin: Some(local_admin),
        },
        client,
    )
    .await
    .map_err(|e| anyhow!("cannot read users and keys: {e}"))?;
    if !loopback && !auth.auth_configured() && !a.insecure_no_auth {
        bail!(
            "refusing to serve {host} with no authentication configured: anyone who can reach it could use it.\n\
             Add a user and a key (`aula users add NAME --role admin`, `aula keys create NAME`), \
             configure [jupyterhub], or pass --insecure-no-auth"
        );
    }
    let term_start = config.term_start_ms();
    let now = aula_store::now_ms();
    let (day, week, term) = aula_gateway::limits::window_starts(now, term_start.unwrap_or(0));
    let prior = aula_gateway::limits::PriorUsage {
        day: store.tokens_by_user_since(day).await?,
        week: store.tokens_by_user_since(week).await?,
        term: store.tokens_by_user_since(term).await?,
    };
    let unfinished = store.unfinished_count().await.unwrap_or(0);
    if unfinished > 0 {
        tracing::warn!(
            "the ledger holds {unfinished} requests marked unfinished (in flight when a gateway stopped abruptly)"
        );
    }
    let limiter = aula_gateway::limits::Limiter::new(config.limit_rules(), term_start, prior);
    let reload: Option<aula_gateway::server::Reload> = config_path.clone().map(|p| {
        Box::new(move || {
            Config::load(&p)
                .map(|c| c.limit_rules())
                .map_err(|e| e.to_string())
        }) as aula_gateway::server::Reload
    });
    let access = aula_gateway::Access {
        auth,
        limiter,
        ledger: aula_store::Ledger::start(store.clone()),
        fair: config.fairness.resolve(),
        reload,
    };
    let listener = tokio::net::TcpListener::bind((host.as_str(), port))
        .await
        .with_context(|| format!("cannot listen on {host}:{port}"))?;
    let addr = listener.local_addr()?;
    let exe = std::env::current_exe().context("cannot find the aula executable")?;
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    // Which models are embedded embedding models (for the example below).
    let embedding_models: Vec<String> = specs
        .iter()
        .filter(|s| {
            matches!(&s.source, aula_gateway::config::ModelSource::Embedded { gguf, .. }
                if aula_fleet::launch::is_embedding_model(gguf))
        })
        .map(|s| s.name.clone())
        .collect();
    let budget = match &config.machine.memory_gb {
        Some(g) => (*g.get_ref() * 1e9) as u64,
        // The planner's detection: a discrete NVIDIA GPU's free memory (NVML);
        // otherwise (CPU, unified memory like the GB10) the memory the OS calls
        // available, not "free": reclaimable caches count as usable.
        None => {
            let hw = aula_fleet::host::detect();
            tracing::info!("memory budget: {:.1} GB ({})", hw.usable_gb, hw.name);
            if hw.usable_gb > 0.0 {
                hw.usable_bytes()
            } else {
                u64::MAX
            }
        }
    };
    let load_timeout = Duration::from_secs(config.machine.load_timeout_seconds.unwrap_or(300));
    // Every background loop is a task of `tasks`, stopped at shutdown.
    let tasks = Tasks::new();
    let settings = aula_fleet::Settings {
        exe,
        logs: home::logs_dir(),
        budget_bytes: budget,
        load_timeout,
    };
    let state = aula_gateway::start(specs, settings, access, &tasks).map_err(|e| anyhow!(e))?;
    let timetable = config.timetable();
    if !timetable.is_empty() {
        let run = aula_fleet::timetable::run(timetable, state.fleet.clone(), tasks.clone());
        tasks.spawn("timetable", run);
    }
    tasks.spawn("reload on SIGHUP", reload_on_hangup(state.clone()));
    let auth_line = if state.auth.auth_configured() {
        "aula: authentication: on (API keys; see `aula users` and `aula keys`)".to_string()
    } else {
        "aula: authentication: off (no users yet; loopback only)".to_string()
    };
    let url = format!("http://{addr}");
    // The example asks a chat model (an embedding model cannot chat).
    let first = names
        .iter()
        .find(|n| !embedding_models.contains(n))
        .or(names.first())
        .cloned()
        .unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "aula: listening on {url}\n\
         {auth_line}\n\
         aula: models: {}\n\
         aula: engine logs in {}\n\n\
         Try it (models answer 503 for a few seconds while they load):\n\n  \
         curl {url}/v1/chat/completions -H 'Content-Type: application/json' \\\n    \
         -d '{{\"model\": \"{first}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello!\"}}]}}'\n\n  \
         python3 -c 'from openai import OpenAI; c = OpenAI(base_url=\"{url}/v1\", api_key=\"none\"); \
         print(c.chat.completions.create(model=\"{first}\", messages=[{{\"role\": \"user\", \"content\": \"Hello!\"}}]).choices[0].message.content)'\n",
        names.join(", "),
        home::logs_dir().display(),
    );
    let _ = out.flush();
    drop(out);
    // Shutdown, in order: stop accepting and let requests in flight finish
    // (bounded, in `server::run`); stop the background loops; commit what
    // the ledger holds; stop the engines; close the database.
    let served = aula_gateway::server::run(listener, state.clone(), shutdown_signal()).await;
    tracing::info!("shutting down: stopping background tasks");
    tasks.shutdown(Duration::from_secs(10)).await;
    state.ledger.close().await;
    tracing::info!("stopping engines");
    state.fleet.stop_all().await;
    store.close().await;
    served.context("the HTTP server failed")
}

/// SIGHUP: apply the limits in the configuration file again.
async fn reload_on_hangup(state: Arc<aula_gateway::server::GatewayState>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        match state.reload_limits() {
            Ok(n) => tracing::info!("reloaded the limits: {n} rules"),
            Err(e) => tracing::error!("reload failed, the old limits stay: {e}"),
        }
    }
}
