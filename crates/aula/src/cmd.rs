//! What each subcommand does; the work itself lives in the library crates.

use crate::cli::{BenchArgs, Cli, Command, EngineArgs, PlanArgs, ServeArgs};
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
    }
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
    let config = match &a.config {
        Some(path) => Config::load(path)?,
        None if home::default_config().exists() => Config::load(&home::default_config())?,
        None => Config::default(),
    };
    let specs = config
        .model_specs(&home::models_dir())
        .map_err(|e| anyhow!(e))?;
    let host = a
        .host
        .or(config.server.host.clone())
        .unwrap_or_else(|| "127.0.0.1".into());
    let port = a.port.or(config.server.port).unwrap_or(8080);
    let listener = tokio::net::TcpListener::bind((host.as_str(), port))
        .await
        .with_context(|| format!("cannot listen on {host}:{port}"))?;
    let addr = listener.local_addr()?;
    let exe = std::env::current_exe().context("cannot find the aula executable")?;
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let fleet = aula_gateway::Fleet::start(specs, exe, home::logs_dir());
    let url = format!("http://{addr}");
    let first = names.first().cloned().unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "aula: listening on {url}\n\
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
    };
    let engine = tokio::task::spawn_blocking(move || aula_engine::load(&cfg)).await??;
    let listener = tokio::net::TcpListener::bind((a.host.as_str(), a.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", a.host, a.port))?;
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

/// `30s`, `2m`, `500ms`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| anyhow!("`{s}` is not a duration (try 30s, 2m, 500ms)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("`{s}` has an unknown unit (use ms, s, m or h)"),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        bail!("the duration must be positive");
    }
    Ok(Duration::from_secs_f64(secs))
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
    let settings = aula_planner::llamacpp::EngineSettings {
        context: a.context,
        parallel: a.parallel,
        n_ubatch: a.batch,
        ..Default::default()
    };
    if a.context == 0 || a.parallel == 0 || a.batch == 0 {
        bail!("--context, --parallel and --batch must be at least 1");
    }
    let precision = aula_planner::ggml::GgmlType::from_name(&a.precision).ok_or_else(|| {
        anyhow!(
            "--precision `{}` is not a ggml type (try f16, bf16, q8_0, q4_0, q4_k)",
            a.precision
        )
    })?;
    let mut rows = Vec::new();
    for path in &a.models {
        let shape = aula_planner::resolve_model(path, precision).map_err(|e| anyhow!(e))?;
        let id = shape.id.clone();
        let mem = aula_planner::llamacpp::memory(&shape, &settings);
        rows.push(serde_json::json!({"model": id, "shape": shape, "settings": {
            "context": a.context, "parallel": a.parallel, "n_ubatch": a.batch, "engine": "embedded (llama.cpp)"},
            "memory": mem}));
    }
    let mut out = std::io::stdout().lock();
    if a.json {
        let _ = writeln!(out, "{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let mib = |v: &serde_json::Value| v.as_u64().unwrap_or(0) as f64 / 1048576.0;
    let _ = writeln!(
        out,
        "{:<34} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "model", "weights", "KV cache", "compute", "output", "total"
    );
    for r in &rows {
        let m = &r["memory"];
        let _ = writeln!(
            out,
            "{:<34} {:>6.1} MiB {:>6.1} MiB {:>6.1} MiB {:>6.2} MiB {:>6.1} MiB",
            r["model"].as_str().unwrap_or(""),
            mib(&m["weights_bytes"]),
            mib(&m["kv_cache_bytes"]),
            mib(&m["compute_buffer_bytes"]),
            mib(&m["output_buffer_bytes"]),
            mib(&m["total_bytes"])
        );
    }
    let _ = writeln!(
        out,
        "(aula engine with --context {} --parallel {} --batch {}; CPU buffers as llama.cpp allocates them)",
        a.context, a.parallel, a.batch
    );
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
                println!(
                    "  {:<40} {:>8.1} MiB  {}",
                    aula_gateway::config::name_for_file(&f),
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

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("0s").is_err());
    }
}
