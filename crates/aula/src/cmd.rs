//! What each subcommand does; the work itself lives in the library crates.

use crate::cli::{
    BenchArgs, Cli, Command, DbArgs, EngineArgs, KeysCommand, PlanArgs, ServeArgs, UsageArgs,
    UsersCommand,
};
use anyhow::{Context, anyhow, bail};
use aula_gateway::config::Config;
use aula_gateway::home;
use std::io::Write;
use std::time::Duration;

pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(a) => serve(a).await,
        Command::Engine(a) => engine(a).await,
        Command::Bench(a) => bench(a).await,
        Command::Plan(a) => plan(a),
        Command::Home => show_home(),
        Command::Doctor(a) => doctor(a),
        Command::Users(c) => users(c).await,
        Command::Keys(c) => keys(c).await,
        Command::Usage(a) => usage(a).await,
        Command::Ps(a) => ps(a).await,
        Command::Load(a) => load_unload("load", a).await,
        Command::Unload(a) => load_unload("unload", a).await,
    }
}

/// A call to a running gateway's admin API.
async fn admin_call(
    g: &crate::cli::GatewayArgs,
    method: &str,
    path: &str,
) -> anyhow::Result<serde_json::Value> {
    let base = g.url.trim_end_matches('/');
    let mut req = ureq_like_request(method, &format!("{base}{path}"))?;
    // Without --api-key, the local admin token of this data directory — only
    // to a gateway on this machine: it is never sent anywhere else.
    let local = is_local_url(base);
    let key = g.api_key.clone().filter(|k| !k.is_empty()).or_else(|| {
        local
            .then(aula_gateway::home::read_local_admin_token)
            .flatten()
    });
    if let Some(k) = &key {
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {k}")
                .parse()
                .map_err(|_| anyhow!("the API key is not a valid header value"))?,
        );
    }
    let client = aula_gateway::backend::http_client();
    let resp = client
        .request(req)
        .await
        .map_err(|e| anyhow!("cannot reach the gateway at {base}: {e}"))?;
    let status = resp.status();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .map_err(|e| anyhow!("reading the gateway's answer: {e}"))?
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        bail!(
            "{}",
            v["error"]["message"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| format!("HTTP {status}"))
        );
    }
    Ok(v)
}

fn ureq_like_request(
    method: &str,
    url: &str,
) -> anyhow::Result<hyper::Request<http_body_util::Full<bytes::Bytes>>> {
    hyper::Request::builder()
        .method(method)
        .uri(url)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .map_err(|e| anyhow!("bad gateway URL {url}: {e}"))
}

async fn ps(a: crate::cli::PsArgs) -> anyhow::Result<()> {
    let v = admin_call(&a.gateway, "GET", "/admin/ps").await?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let gb = |x: &serde_json::Value| {
        x.as_u64()
            .map(|b| format!("{:.2} GB", b as f64 / 1e9))
            .unwrap_or_else(|| "-".into())
    };
    let _ = writeln!(
        out,
        "{:<28} {:<9} {:<10} {:>10} {:>10} {:>6} {:>5} {:>7} {:>9}",
        "model", "engine", "state", "planned", "actual", "slots", "busy", "queued", "idle"
    );
    for m in v["models"].as_array().cloned().unwrap_or_default() {
        let _ = writeln!(
            out,
            "{:<28} {:<9} {:<10} {:>10} {:>10} {:>6} {:>5} {:>7} {:>9}",
            m["model"].as_str().unwrap_or(""),
            m["engine"].as_str().unwrap_or(""),
            m["state"].as_str().unwrap_or(""),
            gb(&m["planned_bytes"]),
            gb(&m["actual_bytes"]),
            m["slots"].to_string(),
            m["busy"].to_string(),
            m["queued"].to_string(),
            m["idle_s"]
                .as_f64()
                .map(|s| format!("{s:.0}s"))
                .unwrap_or_else(|| "-".into())
        );
    }
    let _ = writeln!(out, "memory budget: {}", gb(&v["budget_bytes"]));
    Ok(())
}

async fn load_unload(what: &str, a: crate::cli::ModelOpArgs) -> anyhow::Result<()> {
    let v = admin_call(&a.gateway, "POST", &format!("/admin/{what}/{}", a.model)).await?;
    println!(
        "{}: {}",
        v["model"].as_str().unwrap_or(&a.model),
        v["state"].as_str().unwrap_or("")
    );
    Ok(())
}

/// The config file given, else aula.toml in the data directory if present.
fn load_config(
    path: Option<&std::path::Path>,
) -> anyhow::Result<(Config, Option<std::path::PathBuf>)> {
    Ok(match path {
        Some(p) => (Config::load(p)?, Some(p.to_path_buf())),
        None if home::default_config().exists() => {
            let p = home::default_config();
            (Config::load(&p)?, Some(p))
        }
        None => (Config::default(), None),
    })
}

async fn open_store(config: &Config) -> anyhow::Result<aula_store::Store> {
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

async fn db_store(db: &DbArgs) -> anyhow::Result<aula_store::Store> {
    let (config, _) = load_config(db.config.as_deref())?;
    open_store(&config).await
}

/// Does this URL point at this machine (a loopback host)?
fn is_local_url(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    is_loopback(host)
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
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
    let client = aula_gateway::backend::http_client();
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
                if aula_gateway::is_embedding_model(gguf))
        })
        .map(|s| s.name.clone())
        .collect();
    let budget = match &config.machine.memory_gb {
        Some(g) => (*g.get_ref() * 1e9) as u64,
        // The planner's detection: a discrete NVIDIA GPU's free memory (NVML);
        // otherwise (CPU, unified memory like the GB10) the memory the OS calls
        // available, not "free": reclaimable caches count as usable.
        None => {
            let hw = aula_planner::hardware::detect();
            tracing::info!("memory budget: {:.1} GB ({})", hw.usable_gb, hw.name);
            if hw.usable_gb > 0.0 {
                hw.usable_bytes()
            } else {
                u64::MAX
            }
        }
    };
    let load_timeout = Duration::from_secs(config.machine.load_timeout_seconds.unwrap_or(300));
    let fleet =
        aula_gateway::Fleet::start(specs, exe, home::logs_dir(), access, budget, load_timeout)
            .map_err(|e| anyhow!(e))?;
    let timetable = config.timetable();
    if !timetable.is_empty() {
        tokio::spawn(aula_gateway::timetable::run(timetable, fleet.state.clone()));
    }
    // SIGHUP: apply the limits in the config file again.
    let state = fleet.state.clone();
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            match state.reload_limits() {
                Ok(n) => tracing::info!("reloaded the limits: {n} rules"),
                Err(e) => tracing::error!("reload failed, the old limits stay: {e}"),
            }
        }
    });
    let auth_line = if fleet.state.auth.auth_configured() {
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
    let served = aula_gateway::server::run(listener, fleet.state.clone(), shutdown_signal()).await;
    tracing::info!("stopping engines");
    fleet.stop().await;
    store.close().await;
    served.context("the HTTP server failed")
}

async fn engine(a: EngineArgs) -> anyhow::Result<()> {
    let name = a
        .name
        .unwrap_or_else(|| aula_gateway::config::name_for_file(&a.model));
    let cfg = aula_engine::EngineConfig {
        model: a.model,
        name: Some(name),
        parallel: a.parallel,
        context: a.context,
        threads: a.threads,
        queue: a.queue,
        batch: a.batch,
        verbose: a.verbose,
        api_key: a.api_key.filter(|k| !k.is_empty()),
        pooling: a.pooling.map(|p| match p {
            crate::cli::PoolingArg::Mean => aula_engine::Pooling::Mean,
            crate::cli::PoolingArg::Cls => aula_engine::Pooling::Cls,
            crate::cli::PoolingArg::Last => aula_engine::Pooling::Last,
        }),
    };
    // The socket first, the model second: a port is never left free while
    // the model loads.
    let listener = match a.listen_fd {
        Some(fd) => inherited_listener(fd)?,
        None => tokio::net::TcpListener::bind((a.host.as_str(), a.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", a.host, a.port))?,
    };
    let engine = tokio::task::spawn_blocking(move || aula_engine::load(&cfg)).await??;
    let addr = listener.local_addr()?;
    let st = &engine.state;
    println!(
        "aula engine: model {} listening on http://{addr} ({} slots x {} tokens, {} threads, chat template {}, {} MiB allocated)",
        st.name,
        st.parallel,
        st.context,
        st.threads,
        st.template.source.as_str(),
        st.memory.total_bytes / (1 << 20)
    );
    aula_engine::serve(&engine, listener, shutdown_signal()).await?;
    Ok(())
}

/// A listening TCP socket the parent passed down as file descriptor `fd`.
fn inherited_listener(fd: i32) -> anyhow::Result<tokio::net::TcpListener> {
    use std::os::fd::FromRawFd;
    if fd < 3 {
        bail!("--listen-fd {fd}: not an inherited socket");
    }
    // SAFETY: `aula serve` passes a listening socket it created as this fd and
    // closes its own copy; nothing else in this process uses the number.
    let std_listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    // Not passed on to processes the engine starts (its AMX probe).
    // SAFETY: setting a flag on a descriptor this process owns.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    std_listener
        .local_addr()
        .with_context(|| format!("--listen-fd {fd} is not a listening TCP socket"))?;
    std_listener.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(std_listener)?)
}

/// `30s`, `2m`, `500ms`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let d = aula_gateway::config::parse_duration(s)
        .ok_or_else(|| anyhow!("`{s}` is not a duration (try 30s, 2m, 500ms)"))?;
    if d.is_zero() {
        bail!("the duration must be positive");
    }
    Ok(d)
}

async fn bench(a: BenchArgs) -> anyhow::Result<()> {
    let limit = match (&a.duration, a.requests) {
        (Some(d), _) => aula_bench::Limit::Duration(parse_duration(d)?),
        (None, Some(r)) => aula_bench::Limit::Requests(r),
        (None, None) => aula_bench::Limit::Requests(100),
    };
    let keys = match (&a.keys, &a.api_key) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let keys: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
            if keys.is_empty() {
                bail!("{} holds no keys", path.display());
            }
            keys
        }
        (None, Some(k)) => vec![k.clone()],
        (None, None) => Vec::new(),
    };
    let cfg = aula_bench::BenchConfig {
        url: a.url,
        model: a.model,
        users: a.users,
        concurrency: a.concurrency.unwrap_or(a.users),
        limit,
        prompt_tokens: a.prompt_tokens,
        max_tokens: a.max_tokens,
        stream: a.stream,
        keys,
        temperature: a.temperature,
        progress: !a.json,
        heavy: a.heavy,
    };
    let report = aula_bench::run(cfg).await?;
    let text = if a.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        report.to_text()
    };
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}

fn plan(a: PlanArgs) -> anyhow::Result<()> {
    use aula_planner::estimate::{Engine, PlanRequest, Precision, VerdictKind};
    let mut out = std::io::stdout().lock();
    if a.explain {
        for (name, f) in aula_planner::estimate::FORMULAS {
            let _ = writeln!(out, "{name}:\n    {f}");
        }
        if a.models.is_empty() {
            return Ok(());
        }
    }
    if a.list {
        let _ = writeln!(out, "catalog models:");
        for e in aula_planner::catalog::entries().map_err(|e| anyhow!(e))? {
            let (p, _) = aula_planner::catalog::count_params(&e);
            let _ = writeln!(
                out,
                "  {:<20} {:>8.2}B  {:<10} {}",
                e.id,
                p as f64 / 1e9,
                e.kind,
                e.source
            );
        }
        let _ = writeln!(out, "hardware profiles:");
        for h in aula_planner::hardware::profiles().map_err(|e| anyhow!(e))? {
            let _ = writeln!(
                out,
                "  {:<10} {:<34} {:>6.1} GB usable  {:>6.0} GB/s",
                h.id, h.name, h.usable_gb, h.peak_bandwidth_gbs
            );
        }
        return Ok(());
    }
    if a.context == 0 || a.users == 0 || a.batch == 0 {
        bail!("--context, --users and --batch must be at least 1");
    }
    if !(a.gpu_memory_utilization > 0.0 && a.gpu_memory_utilization <= 1.0) {
        bail!("--gpu-memory-utilization must be in (0, 1]");
    }
    let hw = if a.detect {
        aula_planner::hardware::detect()
    } else {
        aula_planner::hardware::find(&a.hardware).map_err(|e| anyhow!(e))?
    };
    let engine: Engine = a.engine.parse().map_err(|e: String| anyhow!(e))?;
    if let Some(file) = &a.report {
        let rows =
            aula_planner::report::rows(&hw, engine, a.context, a.users).map_err(|e| anyhow!(e))?;
        let html = file.extension().is_some_and(|x| x == "html" || x == "htm");
        if html {
            let page = aula_planner::report::html(&rows, &hw, engine, a.context, a.users);
            std::fs::write(file, page)
                .with_context(|| format!("cannot write {}", file.display()))?;
        } else {
            let svg_path = file.with_extension("svg");
            let svg_name = svg_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "chart.svg".into());
            std::fs::write(&svg_path, aula_planner::report::svg(&rows, &hw))
                .with_context(|| format!("cannot write {}", svg_path.display()))?;
            let md =
                aula_planner::report::markdown(&rows, &hw, engine, a.context, a.users, &svg_name);
            std::fs::write(file, md).with_context(|| format!("cannot write {}", file.display()))?;
        }
        let _ = writeln!(
            out,
            "wrote {} ({} models on {})",
            file.display(),
            rows.len(),
            hw.name
        );
        return Ok(());
    }
    let precision =
        Precision::parse(a.precision.as_deref().unwrap_or("f16")).map_err(|e| anyhow!(e))?;
    let kv_bytes = match a.kv_cache.to_ascii_lowercase().as_str() {
        "fp8" | "fp8_e4m3" | "fp8_e5m2" => 1.0,
        other => aula_planner::ggml::GgmlType::from_name(other)
            .map(|t| t.bits_per_weight() / 8.0)
            .ok_or_else(|| {
                anyhow!("unknown --kv-cache `{other}`; use f16, bf16, fp8, q8_0 or q4_0")
            })?,
    };
    let request = PlanRequest {
        engine,
        precision: precision.clone(),
        context: a.context,
        users: a.users,
        n_ubatch: a.batch,
        gpu_memory_utilization: a.gpu_memory_utilization,
        prompt_tokens: a.prompt_tokens,
        max_num_batched_tokens: a.max_num_batched_tokens,
        kv_bytes_per_elem: kv_bytes,
    };
    let mut wants = Vec::new();
    for path in &a.models {
        let shape = aula_planner::resolve_model(path).map_err(|e| anyhow!(e))?;
        let mut request = request.clone();
        if let (None, Some(p)) = (&a.precision, &shape.released_as) {
            request.precision = Precision::parse(p).map_err(|e| anyhow!(e))?;
        }
        if shape.source.starts_with("GGUF") {
            // A GGUF's weights are what its tensor table says.
            request.precision.name = "gguf".into();
        }
        wants.push(aula_planner::placement::Want { shape, request });
    }
    let estimates: Vec<_> = wants
        .iter()
        .map(|w| aula_planner::estimate::estimate(&w.shape, &hw, &w.request))
        .collect();
    let placement = (wants.len() > 1).then(|| aula_planner::placement::place(&wants, &hw));
    let finetune: Vec<_> = if a.finetune {
        wants
            .iter()
            .map(|w| {
                serde_json::json!({"model": w.shape.id,
                    "train_tokens": a.train_tokens, "lora_rank": a.lora_rank,
                    "estimates": aula_planner::finetune::all(&w.shape, &hw, a.train_tokens, a.lora_rank)})
            })
            .collect()
    } else {
        Vec::new()
    };
    if a.json {
        let mut v =
            serde_json::json!({"hardware": hw, "estimates": estimates, "placement": placement});
        if a.finetune {
            v["finetune"] = serde_json::json!(finetune);
        }
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let gb = |b: u64| b as f64 / 1e9;
    let _ = writeln!(
        out,
        "{} — {:.1} GB usable, {:.0} GB/s peak ({}; efficiencies {})",
        hw.name, hw.usable_gb, hw.peak_bandwidth_gbs, hw.source, hw.efficiency_source
    );
    let _ = writeln!(
        out,
        "engine {}, {} tokens per request, {} at once\n",
        a.engine, a.context, a.users
    );
    let _ = writeln!(
        out,
        "{:<26} {:>9} {:>8} {:>8} {:>8} {:>8} {:>6} {:>9} {:>10} {:>7}",
        "model",
        "precision",
        "weights",
        "KV",
        "other",
        "total",
        "fits",
        "1 stream",
        "all users",
        "TTFT"
    );
    for e in &estimates {
        let m = &e.memory;
        let (one, all, ttft) = match &e.speed {
            Some(s) => (
                format!("{:.1} t/s", s.single_stream_tokens_per_s),
                format!("{:.0} t/s", s.aggregate_tokens_per_s),
                format!("{:.2} s", s.time_to_first_token_s),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let fits = if e.max_sequences == u64::MAX {
            "any".to_string()
        } else {
            e.max_sequences.to_string()
        };
        let _ = writeln!(
            out,
            "{:<26} {:>9} {:>5.1} GB {:>5.1} GB {:>5.1} GB {:>5.1} GB {:>6} {:>9} {:>10} {:>7}",
            e.model,
            e.precision,
            gb(m.weights_bytes),
            gb(m.kv_cache_bytes),
            gb(m.overhead_bytes),
            gb(m.total_bytes),
            fits,
            one,
            all,
            ttft
        );
        let verdict = match e.verdict.kind {
            VerdictKind::Runs => "runs",
            VerdictKind::RunsWithQuantization => "runs with quantization",
            VerdictKind::NeedsOffload => "needs offload",
            VerdictKind::DoesNotFit => "does not fit",
        };
        let _ = writeln!(out, "    {verdict}: {}", e.verdict.reason);
        if let Some(v) = &e.vllm {
            let _ = writeln!(
                out,
                "    vLLM: budget {:.1} GB, activation peak {:.1} GB, KV cache {:.1} GB = {} blocks of 16 tokens, maximum concurrency {:.2}x at {} tokens",
                gb(v.budget_bytes),
                gb(v.activation_peak_bytes),
                v.kv_cache_bytes as f64 / 1e9,
                v.kv_blocks,
                v.max_concurrency,
                e.context
            );
        }
    }
    if let Some(p) = &placement {
        let _ = writeln!(
            out,
            "\ntogether: {:.1} GB of {:.1} GB usable — {} (headroom {:.1} GB)",
            gb(p.total_bytes),
            gb(p.usable_bytes),
            if p.fits {
                "they fit"
            } else {
                "they do not fit"
            },
            p.headroom_bytes as f64 / 1e9
        );
        for m in &p.models {
            let _ = writeln!(
                out,
                "  {:<26} {:>6.1} GB  {}",
                m.model,
                gb(m.bytes),
                m.settings
            );
        }
        for f in &p.fix {
            let _ = writeln!(out, "  to make them fit: {f}");
        }
    }
    if a.finetune {
        for w in &wants {
            let _ = writeln!(
                out,
                "\nfine-tuning {} ({} tokens per sample, micro-batch 1, LoRA rank {}):",
                w.shape.id, a.train_tokens, a.lora_rank
            );
            let _ = writeln!(
                out,
                "  {:<6} {:<13} {:>11} {:>9} {:>9} {:>9} {:>11} {:>9} {:>5} {:>19}",
                "method",
                "checkpointing",
                "trainable",
                "weights",
                "grads",
                "optimizer",
                "activations",
                "total",
                "fits",
                "hours / 10k samples"
            );
            for f in aula_planner::finetune::all(&w.shape, &hw, a.train_tokens, a.lora_rank) {
                let _ = writeln!(
                    out,
                    "  {:<6} {:<13} {:>10.1}M {:>6.1} GB {:>6.1} GB {:>6.1} GB {:>8.1} GB {:>6.1} GB {:>5} {:>19}",
                    format!("{:?}", f.method).to_lowercase(),
                    if f.gradient_checkpointing {
                        "yes"
                    } else {
                        "no"
                    },
                    f.trainable_params as f64 / 1e6,
                    gb(f.weights_bytes),
                    gb(f.gradients_bytes),
                    gb(f.optimizer_bytes),
                    gb(f.activations_bytes),
                    gb(f.total_bytes),
                    if f.fits { "yes" } else { "no" },
                    f.hours_per_10k_samples
                        .map(|h| format!("{h:.2}"))
                        .unwrap_or_else(|| "-".into())
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "\n(`aula plan --explain` prints the formulas; speeds assume the efficiencies above)"
    );
    Ok(())
}

/// Load llama.cpp's CPU backend as `aula engine` would, and say what it chose.
fn doctor(a: crate::cli::DoctorArgs) -> anyhow::Result<()> {
    let r = aula_engine::machine_report()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    println!("cpu variant: {} ({})", r.variant, r.library);
    println!("features:    {}", r.features.join(" "));
    println!(
        "amx:         {}",
        match &r.amx {
            aula_engine::cpu::AmxState::NotListed => "not listed by this CPU".to_string(),
            aula_engine::cpu::AmxState::Works
                if r.features.iter().any(|f| f.starts_with("AMX")) =>
                "listed, probe passed: used".to_string(),
            aula_engine::cpu::AmxState::Works =>
                "listed, probe passed (not used by this variant)".to_string(),
            aula_engine::cpu::AmxState::ProbeFailed { reason } =>
                format!("listed, probe FAILED: not used ({reason})"),
            aula_engine::cpu::AmxState::Disabled { by } => format!("turned off by {by}"),
        }
    );
    println!("devices:     {}", r.devices.join(", "));
    println!("variants:");
    for c in &r.candidates {
        let note = if c.variant == r.variant {
            "  <- in use".to_string()
        } else if let Some(s) = &c.skipped {
            format!("  ({s})")
        } else if c.score <= 0 {
            "  (needs instructions this CPU lacks)".to_string()
        } else {
            String::new()
        };
        println!("  {:<16} score {:>4}{note}", c.variant, c.score);
    }
    if let Some(h) = r.hint() {
        println!("hint: {h}");
    }
    Ok(())
}

fn show_home() -> anyhow::Result<()> {
    let h = home::aula_home();
    println!("data directory: {}", h.display());
    let dir = home::models_dir();
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            let mut files: Vec<_> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
                .collect();
            files.sort();
            println!("models ({}):", dir.display());
            for f in files {
                let size = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
                let kind = if aula_gateway::is_embedding_model(&f) {
                    "embedding"
                } else {
                    "chat"
                };
                println!(
                    "  {:<40} {:<9} {:>8.1} MiB  {}",
                    aula_gateway::config::name_for_file(&f),
                    kind,
                    size as f64 / 1048576.0,
                    f.display()
                );
            }
        }
        Err(_) => println!(
            "no model directory yet ({}); run the set-up in the README",
            dir.display()
        ),
    }
    Ok(())
}

async fn users(c: UsersCommand) -> anyhow::Result<()> {
    use aula_store::User;
    match c {
        UsersCommand::Add {
            name,
            role,
            groups,
            update,
            db,
        } => {
            let role = role.parse().map_err(|e: String| anyhow!(e))?;
            let store = db_store(&db).await?;
            store
                .put_user(
                    &User {
                        name: name.clone(),
                        role,
                        groups,
                    },
                    update,
                )
                .await?;
            eprintln!("aula: user `{name}` saved; make a key with `aula keys create {name}`");
        }
        UsersCommand::Import { file, db } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let list = aula_store::identity::parse_users_csv(&text)
                .map_err(|e| anyhow!("{}: {e}", file.display()))?;
            let store = db_store(&db).await?;
            for u in &list {
                store.put_user(u, true).await?;
            }
            eprintln!("aula: {} users imported", list.len());
        }
        UsersCommand::List { json, db } => {
            let list = db_store(&db).await?.users().await?;
            let mut out = std::io::stdout().lock();
            if json {
                let _ = writeln!(out, "{}", serde_json::to_string_pretty(&list)?);
            } else {
                let _ = writeln!(out, "{:<24} {:<8} groups", "name", "role");
                for u in list {
                    let _ = writeln!(out, "{:<24} {:<8} {}", u.name, u.role, u.groups.join(","));
                }
            }
        }
        UsersCommand::Remove { name, db } => {
            db_store(&db).await?.remove_user(&name).await?;
            eprintln!("aula: user `{name}` and their keys removed");
        }
    }
    Ok(())
}

fn date_of(ms: Option<i64>) -> String {
    let Some(ms) = ms else { return "-".into() };
    // Civil date from days (Howard Hinnant's algorithm), UTC.
    let z = ms.div_euclid(86_400_000) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let secs = ms.rem_euclid(86_400_000) / 1000;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        secs / 3600,
        secs / 60 % 60
    )
}

async fn keys(c: KeysCommand) -> anyhow::Result<()> {
    match c {
        KeysCommand::Create { user, expires, db } => {
            let (info, secret) = db_store(&db).await?.create_key(&user, expires).await?;
            // The key alone on stdout, so `KEY=$(aula keys create ada)` works.
            println!("{secret}");
            eprintln!(
                "aula: key {} for `{user}` (expires {}); it is shown only now",
                info.id,
                date_of(info.expires_ms)
            );
        }
        KeysCommand::Revoke { id_or_user, db } => {
            let n = db_store(&db).await?.revoke(&id_or_user).await?;
            eprintln!(
                "aula: {n} key(s) revoked; running gateways stop accepting them within a second"
            );
        }
        KeysCommand::List { user, db } => {
            let list = db_store(&db).await?.keys(user.as_deref()).await?;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "{:<12} {:<24} {:<17} {:<17} revoked",
                "id", "user", "created", "expires"
            );
            for k in list {
                let _ = writeln!(
                    out,
                    "{:<12} {:<24} {:<17} {:<17} {}",
                    k.id,
                    k.user,
                    date_of(Some(k.created_ms)),
                    date_of(k.expires_ms),
                    date_of(k.revoked_ms)
                );
            }
        }
    }
    Ok(())
}

/// `2026-09-01`, or a span back from now: `24h`, `7d`, `30m`.
fn parse_since(s: &str) -> anyhow::Result<i64> {
    if let Some(ms) = aula_gateway::config::parse_date_ms(s) {
        return Ok(ms);
    }
    let span = if let Some(d) = s.strip_suffix('d') {
        let n: f64 = d
            .parse()
            .map_err(|_| anyhow!("`{s}`: use a date (2026-09-01) or a span (24h, 7d)"))?;
        Duration::from_secs_f64(n * 86_400.0)
    } else {
        parse_duration(s)
            .map_err(|_| anyhow!("`{s}`: use a date (2026-09-01) or a span (24h, 7d)"))?
    };
    Ok(aula_store::now_ms() - span.as_millis() as i64)
}

async fn usage(a: UsageArgs) -> anyhow::Result<()> {
    let by: aula_store::UsageBy = a.by.parse().map_err(|e: String| anyhow!("--by {e}"))?;
    let since = a
        .since
        .as_deref()
        .map(parse_since)
        .transpose()?
        .unwrap_or(i64::MIN);
    let rows = db_store(&a.db).await?.usage(by, since).await?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&rows)?);
    } else if a.csv {
        let _ = writeln!(
            out,
            "{},requests,ok,errors,cancelled,unfinished,prompt_tokens,completion_tokens,mean_queue_ms,mean_ttft_ms",
            a.by
        );
        for r in rows {
            let key = if r.key.contains([',', '"']) {
                format!("\"{}\"", r.key.replace('"', "\"\""))
            } else {
                r.key.clone()
            };
            let _ = writeln!(
                out,
                "{key},{},{},{},{},{},{},{},{:.1},{:.1}",
                r.requests,
                r.ok,
                r.errors,
                r.cancelled,
                r.unfinished,
                r.prompt_tokens,
                r.completion_tokens,
                r.mean_queue_ms,
                r.mean_ttft_ms
            );
        }
    } else {
        let _ = writeln!(
            out,
            "{:<24} {:>8} {:>8} {:>7} {:>10} {:>12} {:>12} {:>10} {:>10}",
            a.by,
            "requests",
            "ok",
            "errors",
            "unfinished",
            "prompt tok",
            "output tok",
            "queue ms",
            "ttft ms"
        );
        for r in rows {
            let _ = writeln!(
                out,
                "{:<24} {:>8} {:>8} {:>7} {:>10} {:>12} {:>12} {:>10.1} {:>10.1}",
                r.key,
                r.requests,
                r.ok,
                r.errors + r.cancelled,
                r.unfinished,
                r.prompt_tokens,
                r.completion_tokens,
                r.mean_queue_ms,
                r.mean_ttft_ms
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{is_local_url, parse_duration};
    use std::time::Duration;

    /// The local admin token goes only to gateways on this machine.
    #[test]
    fn local_urls() {
        for u in [
            "http://127.0.0.1:8080",
            "http://localhost:8080/",
            "http://[::1]:8080",
            "http://127.0.0.2",
        ] {
            assert!(is_local_url(u), "{u}");
        }
        for u in [
            "http://10.0.0.5:8080",
            "http://aula.example.lan:8080",
            "http://127.0.0.1.evil.com",
            "not a url",
        ] {
            assert!(!is_local_url(u), "{u}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("0s").is_err());
        assert_eq!(super::date_of(Some(1_795_694_400_000)), "2026-11-26 12:00");
        assert!(super::parse_since("7d").is_ok() && super::parse_since("7y").is_err());
        assert_eq!(super::parse_since("2026-09-01").unwrap(), 1_788_220_800_000);
    }
}
