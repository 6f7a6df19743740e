//! `aula serve` put together: the database, who may ask (authentication,
//! limits seeded from the ledger), the listener, the fleet, and the
//! background tasks — then served until shutdown, which runs in one order:
//! stop accepting and let requests in flight finish (bounded, in
//! [`crate::server::run`]); stop the background loops; commit what the
//! ledger holds; stop the engines; close the database.

use crate::config::Config;
use crate::home;
use crate::state::GatewayState;
use anyhow::{Context, anyhow, bail};
use aula_fleet::tasks::Tasks;
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

/// What the command line decides.
pub struct Options {
    pub host: String,
    pub port: u16,
    /// Serve a non-loopback address with no authentication configured.
    pub insecure_no_auth: bool,
    /// The `aula` binary, for `aula engine` children.
    pub exe: PathBuf,
}

/// A gateway listening, its fleet started.
pub struct App {
    pub state: GatewayState,
    pub addr: std::net::SocketAddr,
    /// Every model's name, and those that can chat (not embedding models).
    pub models: Vec<String>,
    pub chat_models: Vec<String>,
    listener: tokio::net::TcpListener,
    store: aula_store::Store,
    /// This gateway's row in the database's list of gateways.
    me: aula_store::GatewayRow,
    tasks: Tasks,
    /// The data directory, held until the gateway has shut down.
    data_dir: home::DataDirLock,
}

/// The database `aula.toml` names, or `aula.db` in the data directory.
pub async fn open_store(config: &Config) -> anyhow::Result<aula_store::Store> {
    let store = match &config.server.database {
        Some(url) => aula_store::Store::open(url).await,
        None => aula_store::Store::open_in(&home::aula_home()).await,
    };
    store.map_err(|e| {
        let at = config
            .server
            .database
            .as_deref()
            .map(aula_store::db::redact)
            .unwrap_or_else(|| home::aula_home().join("aula.db").display().to_string());
        anyhow!("cannot open the database {at}: {e}")
    })
}

/// Is this host this machine (`localhost` or a loopback address)?
pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// The budget the engines Aula starts share: `[machine] memory_gb`, else
/// what the host says is usable — a discrete NVIDIA GPU's free memory
/// (NVML), otherwise (CPU, unified memory like the GB10) the memory the OS
/// calls available, not "free": reclaimable caches count as usable.
fn memory_budget(config: &Config) -> u64 {
    if let Some(g) = &config.machine.memory_gb {
        return (*g.get_ref() * 1e9) as u64;
    }
    let hw = aula_fleet::host::detect();
    tracing::info!("memory budget: {:.1} GB ({})", hw.usable_gb, hw.name);
    if hw.usable_gb > 0.0 {
        hw.usable_bytes()
    } else {
        u64::MAX
    }
}

/// Who may ask and how much: authentication (refusing to serve a
/// non-loopback address without it), and limits seeded from the ledger.
async fn access(
    config: &Config,
    config_path: Option<PathBuf>,
    store: &aula_store::Store,
    opts: &Options,
) -> anyhow::Result<crate::Access> {
    let loopback = is_loopback(&opts.host);
    let local_admin = home::ensure_local_admin_token().map_err(|e| {
        anyhow!(
            "cannot write the local admin token {}: {e}",
            home::local_admin_token_path().display()
        )
    })?;
    let auth = crate::auth::Authenticator::new(
        store.clone(),
        crate::auth::AuthSettings {
            hub: config.hub().map_err(|e| anyhow!(e))?,
            trusted: config.auth.trusted.clone(),
            verified: config
                .auth
                .verified
                .iter()
                .map(|v| v.get_ref().clone())
                .collect(),
            jwt: config.auth.jwt().map_err(|e| anyhow!(e))?,
            allow_open: loopback || opts.insecure_no_auth,
            local_admin: Some(local_admin),
        },
        aula_fleet::backend::http_client(),
    )
    .await
    .map_err(|e| anyhow!("cannot read users and keys: {e}"))?;
    if !loopback && !auth.auth_configured() && !opts.insecure_no_auth {
        bail!(
            "refusing to serve {} with no authentication configured: anyone who can reach it could use it.\n\
             Add a user and a key (`aula users add NAME --role admin`, `aula keys create NAME`), \
             configure [jupyterhub], or pass --insecure-no-auth",
            opts.host
        );
    }
    let term_start = config.term_start_ms();
    let (day, week, term) =
        crate::limits::window_starts(aula_store::now_ms(), term_start.unwrap_or(0));
    let prior = crate::limits::PriorUsage {
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
    let reload: Option<crate::pipeline::Reload> = config_path.map(|p| {
        Box::new(move || {
            Config::load(&p)
                .map(|c| c.limit_rules())
                .map_err(|e| e.to_string())
        }) as crate::pipeline::Reload
    });
    Ok(crate::Access {
        auth,
        limiter: crate::limits::Limiter::new(config.limit_rules(), term_start, prior),
        ledger: aula_store::Ledger::start(store.clone()),
        fair: config.fairness.resolve(),
        reload,
        store: store.clone(),
        files: crate::files::Files::new(
            config
                .server
                .files_dir
                .clone()
                .unwrap_or_else(|| home::aula_home().join("files")),
        ),
        rag: config.rag.settings(),
        web: config.web(),
        finetune: config.fine_tuning.settings(),
        scheduling: std::sync::Arc::new(crate::scheduling::Scheduling::alone()),
    })
}

impl App {
    /// Open the database, bind the listener, start the fleet and the
    /// background tasks.
    pub async fn start(
        config: &Config,
        config_path: Option<PathBuf>,
        opts: Options,
    ) -> anyhow::Result<App> {
        let specs = config
            .model_specs(&home::models_dir())
            .map_err(|e| anyhow!(e))?;
        // One gateway per data directory, before anything in it is touched.
        let data_dir = home::lock_data_dir(&home::aula_home()).map_err(|e| anyhow!("{e}"))?;
        let store = open_store(config).await?;
        let mut access = access(config, config_path, &store, &opts).await?;
        access.files.sweep(&store).await;
        let listener = tokio::net::TcpListener::bind((opts.host.as_str(), opts.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", opts.host, opts.port))?;
        let addr = listener.local_addr()?;
        let me = join(&store, addr).await?;
        access.finetune.gateway = me.id.clone();
        access.rag.gateway = me.id.clone();
        // Several gateways may share a PostgreSQL: count limits there.
        let shared = store.is_postgres().then(|| {
            let lease = config
                .server
                .reservation_lease_seconds
                .map_or(crate::limits::shared::DEFAULT_LEASE_MS, |s| {
                    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
                });
            let s = std::sync::Arc::new(crate::limits::Shared::new(
                store.clone(),
                me.id.clone(),
                lease,
            ));
            access.limiter.share(s.clone());
            s
        });
        // ... and one of them schedules the engines (unless each schedules
        // its own): the first election before serving.
        let election = if store.is_postgres() && config.server.one_scheduler.unwrap_or(true) {
            let me = std::sync::Arc::new(crate::scheduling::Scheduling::elected());
            let mut c = aula_store::leader::Candidate::default();
            me.tick(&store, &mut c).await;
            access.scheduling = me.clone();
            Some((me, c))
        } else {
            None
        };
        let models: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        let chat_models: Vec<String> = specs
            .iter()
            .filter(|s| !s.is_embedding())
            .map(|s| s.name.clone())
            .collect();
        // Every background loop is a task of `tasks`, stopped at shutdown.
        let tasks = Tasks::new();
        let settings = aula_fleet::Settings {
            exe: opts.exe,
            logs: home::logs_dir(),
            budget_bytes: memory_budget(config),
            load_timeout: Duration::from_secs(config.machine.load_timeout_seconds.unwrap_or(300)),
        };
        let state = crate::start(specs, settings, access, &tasks).map_err(|e| anyhow!(e))?;
        let timetable = config.timetable();
        if !timetable.is_empty() {
            let run = aula_fleet::timetable::run(timetable, state.gw.fleet.clone(), tasks.clone());
            tasks.spawn("timetable", run);
        }
        tasks.spawn("reload on SIGHUP", reload_on_hangup(state.clone()));
        if store.is_postgres() {
            tasks.spawn("gateway heartbeat", heartbeat(store.clone(), me.clone()));
            tasks.spawn(
                "changes to users and keys",
                listen_auth(store.clone(), state.gw.clone()),
            );
        }
        if let Some(shared) = shared {
            tasks.spawn("shared limits: leases and sweep", leases(shared));
        }
        if let Some((me, c)) = election {
            tasks.spawn(
                "scheduler election",
                crate::scheduling::run(store.clone(), me, c),
            );
        }
        Ok(App {
            state,
            addr,
            models,
            chat_models,
            listener,
            store,
            me,
            tasks,
            data_dir,
        })
    }

    /// Serve until `shutdown` resolves, then shut down in order.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let served = crate::server::run(self.listener, self.state.clone(), shutdown).await;
        tracing::info!("shutting down: stopping background tasks");
        self.tasks.shutdown(Duration::from_secs(10)).await;
        if let Some(shared) = self.state.gw.limiter.shared() {
            shared.drain(Duration::from_secs(5)).await;
        }
        self.state.gw.ledger.close().await;
        tracing::info!("stopping engines");
        self.state.gw.fleet.stop_all().await;
        if let Err(e) = self.store.leave_gateways(&self.me.id).await {
            tracing::warn!("could not remove this gateway's row: {e}");
        }
        self.store.close().await;
        drop(self.data_dir);
        served.context("the HTTP server failed")
    }

    /// What `aula serve` prints once it listens: where, whether keys are
    /// needed, the models, and a request to try.
    pub fn banner(&self) -> String {
        let url = format!("http://{}", self.addr);
        let auth_line = if self.state.gw.auth.auth_configured() {
            "aula: authentication: on (API keys; see `aula users` and `aula keys`)"
        } else {
            "aula: authentication: off (no users yet; loopback only)"
        };
        // The example asks a chat model (an embedding model cannot chat).
        let first = self
            .chat_models
            .first()
            .or(self.models.first())
            .cloned()
            .unwrap_or_default();
        format!(
            "aula: listening on {url}\n\
             {auth_line}\n\
             aula: models: {}\n\
             aula: engine logs in {}\n\n\
             Try it (models answer 503 for a few seconds while they load):\n\n  \
             curl {url}/v1/chat/completions -H 'Content-Type: application/json' \\\n    \
             -d '{{\"model\": \"{first}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello!\"}}]}}'\n\n  \
             python3 -c 'from openai import OpenAI; c = OpenAI(base_url=\"{url}/v1\", api_key=\"none\"); \
             print(c.chat.completions.create(model=\"{first}\", messages=[{{\"role\": \"user\", \"content\": \"Hello!\"}}]).choices[0].message.content)'\n",
            self.models.join(", "),
            home::logs_dir().display(),
        )
    }
}

/// SIGHUP: apply the limits in the configuration file again.
async fn reload_on_hangup(state: GatewayState) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        match state.gw.reload_limits() {
            Ok(n) => tracing::info!("reloaded the limits: {n} rules"),
            Err(e) => tracing::error!("reload failed, the old limits stay: {e}"),
        }
    }
}

/// Put this gateway in the database's list of gateways. On SQLite one
/// gateway serves a database: its budgets, rate windows and fair queue live
/// in its memory, so a second one would grant every budget again. A
/// gateway that finds another alive that started before it refuses,
/// naming it (two that start at once each see the other, and the later one
/// refuses). On PostgreSQL several may join.
async fn join(
    store: &aula_store::Store,
    addr: std::net::SocketAddr,
) -> anyhow::Result<aula_store::GatewayRow> {
    let now = aula_store::now_ms();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let pid = std::process::id();
    let me = aula_store::GatewayRow {
        id: format!("{host}:{pid}:{now}"),
        host,
        pid: i64::from(pid),
        address: addr.to_string(),
        started_ms: now,
        seen_ms: now,
    };
    let mut others = store
        .join_gateways(&me)
        .await
        .map_err(|e| anyhow!("cannot join the database's list of gateways: {e}"))?;
    // A gateway of this machine whose process is gone died without leaving
    // (killed, or the machine restarted): its row goes now. (On SQLite every
    // row is of this machine: WAL is shared only there.)
    let gone = |o: &aula_store::GatewayRow| {
        (o.host == me.host || !store.is_postgres()) && !process_alive(o.pid)
    };
    for o in others.iter().filter(|o| gone(o)) {
        tracing::info!(
            "removing the row of gateway pid {} (no longer running)",
            o.pid
        );
        let _ = store.leave_gateways(&o.id).await;
    }
    others.retain(|o| !gone(o));
    if store.is_postgres() {
        if !others.is_empty() {
            tracing::info!(
                "{} other gateways use this database: {}",
                others.len(),
                others
                    .iter()
                    .map(|o| o.address.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        return Ok(me);
    }
    if let Some(o) = others.iter().find(|o| o.precedes(&me)) {
        let _ = store.leave_gateways(&me.id).await;
        bail!(
            "another gateway uses this SQLite database: pid {} on {}, serving {}, started {:.0} s ago.\n\
             On SQLite one gateway serves a database (its budgets and queue live in its memory, so a second \
             would grant every budget again). Stop it, or give every gateway the same PostgreSQL database: \
             [server] database = \"postgres://user:password@host/aula\" in aula.toml.",
            o.pid,
            o.host,
            o.address,
            (now - o.started_ms).max(0) as f64 / 1000.0
        );
    }
    Ok(me)
}

/// Renew this gateway's row every [`aula_store::gateways::HEARTBEAT_MS`]
/// until shutdown (PostgreSQL only: see `aula_store::gateways`).
/// On PostgreSQL: every change to users, groups or keys (by any gateway or
/// `aula` command) is announced, and this gateway drops its cache of them at
/// once, so a revoked key is refused everywhere at its next use. Without
/// the announcement (the listening connection lost), the cache is checked
/// every second anyway.
async fn listen_auth(store: aula_store::Store, gw: std::sync::Arc<crate::pipeline::Gateway>) {
    loop {
        match store.listen_auth_changes().await {
            Ok(Some(mut listener)) => loop {
                match listener.recv().await {
                    Ok(_) => gw.auth.changed_elsewhere(),
                    Err(e) => {
                        tracing::warn!("listening for changes to users and keys: {e}");
                        break;
                    }
                }
            },
            Ok(None) => return,
            Err(e) => tracing::warn!(
                "cannot listen for changes to users and keys ({e}); they are read every second instead"
            ),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

async fn heartbeat(store: aula_store::Store, mut me: aula_store::GatewayRow) {
    let every = Duration::from_millis(aula_store::gateways::HEARTBEAT_MS as u64);
    loop {
        tokio::time::sleep(every).await;
        me.seen_ms = aula_store::now_ms();
        if let Err(e) = store.gateway_heartbeat(&me).await {
            tracing::warn!("gateway heartbeat: {e}");
        }
    }
}

/// Renew this gateway's reservations and return expired ones, three times
/// a lease.
async fn leases(shared: std::sync::Arc<crate::limits::Shared>) {
    let every = Duration::from_millis((shared.lease_ms() / 3).max(100) as u64);
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = aula_store::db::within(shared.tick(aula_store::now_ms())).await {
            tracing::warn!("shared limits: {e}");
        }
    }
}

/// Is process `pid` of this machine an Aula gateway (`aula serve`, this
/// program)? A pid alone is not enough: after a restart the pid of a
/// gateway that died may belong to any other process.
fn process_alive(pid: i64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let name = |p: &[u8]| {
        std::path::Path::new(std::ffi::OsStr::from_bytes(p))
            .file_name()
            .map(|n| n.to_os_string())
    };
    let ours = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_os_string()));
    let same_program = args
        .first()
        .is_some_and(|a0| name(a0).is_some() && name(a0) == ours);
    same_program && args.iter().any(|a| *a == b"serve")
}
