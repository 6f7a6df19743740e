//! `aula assess`: this machine's figures measured, not advertised. A
//! streaming read of memory, then each model run by Aula's own engine
//! (`aula engine`, as the fleet starts it): time to load, memory allocated
//! against planned, prefill and decode tokens per second at one stream and
//! at `--parallel` streams, each repeated and kept with its spread. The
//! result is `$AULA_HOME/assessment.toml`; `aula plan --hardware this` plans
//! with it instead of a catalog profile.
//!
//! A run can be stopped and started again: the file is written after each
//! step, and a new run keeps what the same build already measured (unless
//! `--again`). It refuses to run while a gateway serves this data
//! directory's students (it would take their cores), unless
//! `--while-serving`, which caps it at half the cores and one stream.

use super::print;
use crate::cli::{AssessArgs, GatewayArgs};
use anyhow::{Context, anyhow, bail};
use aula_bench::{BenchConfig, Limit};
use aula_planner::assessment::{
    Assessment, Figure, ModelFigures, StepPoint, decode_tflops, fit_decode,
};
use aula_planner::hardware::DecodeFit;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The assessment of this machine, if one was made.
pub fn load() -> anyhow::Result<Option<Assessment>> {
    aula_gateway::home::assessment().map_err(|e| anyhow!(e))
}

fn build() -> String {
    format!(
        "aula {} ({}, {})",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    )
}

fn now_utc() -> String {
    aula_store::tables::date_of(Some(aula_store::now_ms())) + " UTC"
}

pub async fn assess(a: AssessArgs) -> anyhow::Result<()> {
    if !a.while_serving && serving(&a.gateway).await {
        bail!(
            "a gateway answers at {}: assessing now would take its students' cores. Stop it, or pass --while-serving (half the cores, one stream)",
            a.gateway.url
        );
    }
    let files = models(&a)?;
    let path = aula_gateway::home::assessment_path();
    let kept = if a.again { None } else { load()? };
    let kept = kept.filter(|k| k.build == build());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let host = aula_fleet::host::detect();
    let report = aula_engine::machine_report().ok();
    let backend = match report {
        Some(r) if r.devices.iter().any(|d| !d.starts_with("CPU")) => {
            format!("gpu ({})", r.devices.join(", "))
        }
        Some(r) => format!("cpu ({})", r.variant),
        None => "unknown".into(),
    };
    let mut out = Assessment {
        date: now_utc(),
        build: build(),
        backend,
        cores,
        memory_gb: host.memory_gb,
        usable_gb: host.usable_gb,
        bandwidth_gbs: kept.as_ref().and_then(|k| k.bandwidth_gbs.clone()),
        models: Vec::new(),
        decode_fit: None,
    };
    let repeats = if a.quick { 2 } else { 3 };
    let threads = if a.while_serving {
        (cores / 2).max(1)
    } else {
        cores
    };
    let progress = Progress::new(1 + files.len());
    if out.bandwidth_gbs.is_none() {
        progress.step(1, "memory bandwidth (streaming read)");
        // Beside a serving gateway it takes no more memory than a quick run.
        let mib = if a.quick || a.while_serving {
            256
        } else {
            1024
        };
        out.bandwidth_gbs = Some(bandwidth(mib, threads, repeats + 2));
        write(&path, &out)?;
    }
    for (i, file) in files.iter().enumerate() {
        let name = aula_planner::model_name_for_file(file);
        if let Some(m) = kept.as_ref().and_then(|k| {
            k.models
                .iter()
                .find(|m| m.file == file.display().to_string())
        }) {
            progress.step(i + 2, &format!("{name}: kept from the last run"));
            out.models.push(m.clone());
            continue;
        }
        progress.step(i + 2, &format!("{name}: load, prefill, decode"));
        let parallel = if a.while_serving { 1 } else { a.parallel };
        let m = measure_model(file, &name, &a, parallel, threads, repeats)
            .await
            .with_context(|| format!("assessing {}", file.display()))?;
        out.models.push(m);
        write(&path, &out)?;
    }
    drop(progress);
    out.decode_fit = decode_fit(&out, if a.quick { 32 } else { 128 })?;
    out.date = now_utc();
    write(&path, &out)?;
    print(&summary(&out, &path));
    Ok(())
}

/// The decode model's constants fit to the measured single-stream steps
/// (the CPU class's; a GPU's fit is not made yet). Each model's reads are
/// what the planner says a step at the measured KV length reads.
fn decode_fit(a: &Assessment, max_tokens: u32) -> anyhow::Result<Option<DecodeFit>> {
    use aula_planner::estimate::{EngineKind, PlanRequest, decode_step};
    if !a.backend.starts_with("cpu") || a.models.is_empty() {
        return Ok(None);
    }
    let catalog = aula_planner::decode::catalog().map_err(|e| anyhow!(e))?;
    let class = catalog
        .class("cpu")
        .ok_or_else(|| anyhow!("no cpu decode class"))?;
    let default = catalog
        .constants_for_class(class, None)
        .map_err(|e| anyhow!(e))?
        .per_layer_s;
    // Reads at the full bandwidth: the fit's share 1, no fixed cost.
    let mut hw = a.hardware();
    hw.decode_fit = Some(DecodeFit {
        class: "cpu".into(),
        memory_share: 1.0,
        per_layer_s: 0.0,
        decode_tflops: None,
        source: "provisional".into(),
    });
    let mut points = Vec::new();
    let mut batched = Vec::new();
    for m in &a.models {
        let shape = aula_planner::resolve_model(Path::new(&m.file)).map_err(|e| anyhow!(e))?;
        let query = aula_planner::query::PlanQuery {
            request: PlanRequest {
                engine: EngineKind::Embedded,
                // KV half full at the decode measurement's length.
                context: 2 * (32 + max_tokens / 2),
                users: 1,
                ..PlanRequest::default()
            },
            precision: None,
        };
        let request = query.resolve(&shape).map_err(|e| anyhow!(e))?;
        let matmul = shape.params_active.saturating_sub(shape.lookup_params);
        batched.push((matmul, m.parallel, m.decode_tps_n.median));
        if let Some((_, _, Some((t, _)))) = decode_step(&shape, &hw, &request, 1) {
            points.push(StepPoint {
                n_layers: shape.n_layers,
                read_s: t.weights_s + t.kv_s,
                measured_s: 1.0 / m.decode_tps_1.median,
            });
        }
    }
    let names: Vec<&str> = a.models.iter().map(|m| m.name.as_str()).collect();
    Ok(
        fit_decode(&points, default).map(|(memory_share, per_layer_s)| DecodeFit {
            class: "cpu".into(),
            memory_share,
            per_layer_s,
            decode_tflops: decode_tflops(&batched),
            source: format!(
                "aula assess {}: {} single-stream steps ({})",
                a.date,
                points.len(),
                names.join(", ")
            ),
        }),
    )
}

/// Whether a gateway of this data directory answers (its admin API with
/// the local token; any answer but "cannot reach" counts).
async fn serving(g: &GatewayArgs) -> bool {
    match super::gateway::call(g, "GET", "/admin/ps", None).await {
        Ok(_) => true,
        Err(e) => !e.to_string().starts_with("cannot reach"),
    }
}

/// The models to measure: those named, else the chat models in the data
/// directory's `models/` (the built-in ones after set-up).
fn models(a: &AssessArgs) -> anyhow::Result<Vec<PathBuf>> {
    if !a.model.is_empty() {
        for m in &a.model {
            if !m.is_file() {
                bail!("{}: no such model file", m.display());
            }
        }
        return Ok(a.model.clone());
    }
    let dir = aula_gateway::home::models_dir();
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    found.retain(|p| p.extension().is_some_and(|x| x == "gguf"));
    found.retain(|p| !aula_fleet::spec::ModelFacts::read(p).embedding);
    found.sort();
    Ok(found)
}

/// Where the run is: a bar with the elapsed time on a terminal, a line a
/// step in a log.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    of: usize,
}

impl Progress {
    fn new(of: usize) -> Progress {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(of as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
            ) {
                b.set_style(style);
            }
            b.enable_steady_tick(std::time::Duration::from_millis(200));
            b
        });
        Progress { bar, of }
    }

    /// Step `step` (from 1) begins.
    fn step(&self, step: usize, what: &str) {
        match &self.bar {
            Some(b) => {
                b.set_position(step.saturating_sub(1) as u64);
                b.set_message(what.to_string());
            }
            None => eprintln!("[{step}/{}] {what}", self.of),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn write(path: &Path, a: &Assessment) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, a.to_toml().map_err(|e| anyhow!(e))?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// GB/s of `threads` threads each summing its share of `mib` MiB of
/// memory (touched first, so page faults are not timed), `runs` times.
fn bandwidth(mib: usize, threads: usize, runs: usize) -> Figure {
    let words = mib * 1024 * 1024 / 8;
    let buf: Vec<u64> = (0..words as u64).collect();
    let per = words.div_ceil(threads);
    let mut samples = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = buf
                .chunks(per)
                .map(|c| s.spawn(move || c.iter().fold(0u64, |a, x| a.wrapping_add(*x))))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0, u64::wrapping_add)
        });
        std::hint::black_box(total);
        samples.push((words * 8) as f64 / start.elapsed().as_secs_f64() / 1e9);
    }
    Figure::of(
        &samples,
        &format!("{threads} threads summing {mib} MiB of u64, {runs} runs"),
    )
    .unwrap_or(Figure {
        median: 0.0,
        min: 0.0,
        max: 0.0,
        runs: 0,
        method: "none".into(),
    })
}

/// An engine child on a free loopback port, killed when dropped.
struct EngineChild {
    child: std::process::Child,
    url: String,
}

impl Drop for EngineChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Start `aula engine` for `file` and wait until it answers `/health`:
/// the child and how long it took.
async fn start_engine(
    file: &Path,
    name: &str,
    context: u32,
    parallel: usize,
    threads: usize,
) -> anyhow::Result<(EngineChild, Duration, serde_json::Value)> {
    let port = free_port()?;
    let log = aula_gateway::home::logs_dir().join(format!("assess-{name}.log"));
    std::fs::create_dir_all(aula_gateway::home::logs_dir())?;
    let started = Instant::now();
    let child = std::process::Command::new(std::env::current_exe()?)
        .args(["engine", "--model"])
        .arg(file)
        .args(["--name", name, "--port", &port.to_string()])
        .args(["--parallel", &parallel.to_string()])
        .args(["--context", &context.to_string()])
        .args(["--threads", &threads.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting aula engine")?;
    let mut engine = EngineChild {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let g = GatewayArgs {
        url: engine.url.clone(),
        api_key: None,
    };
    loop {
        if let Some(status) = engine.child.try_wait()? {
            bail!(
                "the engine exited ({status}) before it answered; its log: {}",
                log.display()
            );
        }
        if let Ok(h) = super::gateway::call(&g, "GET", "/health", None).await {
            return Ok((engine, started.elapsed(), h));
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!(
                "the engine did not answer in 10 minutes; its log: {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn bench_config(
    url: &str,
    model: &str,
    concurrency: usize,
    prompt: usize,
    max: u32,
    n: u64,
) -> BenchConfig {
    BenchConfig {
        url: url.to_string(),
        model: model.to_string(),
        users: concurrency,
        concurrency,
        limit: Limit::Requests(n),
        prompt_tokens: prompt,
        max_tokens: max,
        stream: true,
        keys: Vec::new(),
        temperature: 0.0,
        progress: false,
        heavy: None,
        think: None,
        heavy_users: 0,
        heavy_max_tokens: None,
        open_loop: false,
    }
}

async fn measure_model(
    file: &Path,
    name: &str,
    a: &AssessArgs,
    parallel: usize,
    threads: usize,
    repeats: usize,
) -> anyhow::Result<ModelFigures> {
    let shape = aula_planner::resolve_model(file).map_err(|e| anyhow!(e))?;
    let planned = aula_fleet::launch::planned_bytes(file, Some(a.context), Some(parallel));
    let mut loads = Vec::new();
    let mut allocated = 0;
    let (mut prefill, mut decode1, mut decoden) = (Vec::new(), Vec::new(), Vec::new());
    let (prompt, max) = if a.quick { (128, 32) } else { (512, 128) };
    for _ in 0..repeats {
        let (engine, load, health) = start_engine(file, name, a.context, parallel, threads).await?;
        loads.push(load.as_secs_f64());
        allocated = health["memory"]["total_bytes"].as_u64().unwrap_or(0);
        // Prefill: one stream, one token out; prompt tokens over the time
        // to that token.
        let r = aula_bench::run(bench_config(&engine.url, name, 1, prompt, 1, 3)).await?;
        if r.requests_ok > 0 && r.ttft.mean_ms > 0.0 {
            let per = r.prompt_tokens as f64 / r.requests_ok as f64;
            prefill.push(per / (r.ttft.mean_ms / 1000.0));
        }
        // Decode: tokens after the first, from the time between tokens.
        let r = aula_bench::run(bench_config(&engine.url, name, 1, 32, max, 3)).await?;
        if r.itl.mean_ms > 0.0 {
            decode1.push(1000.0 / r.itl.mean_ms);
        }
        let r = aula_bench::run(bench_config(
            &engine.url,
            name,
            parallel,
            32,
            max,
            2 * parallel as u64,
        ))
        .await?;
        if r.itl.mean_ms > 0.0 {
            decoden.push(parallel as f64 * 1000.0 / r.itl.mean_ms);
        }
        drop(engine);
    }
    let fig = |s: &[f64], m: &str| {
        Figure::of(s, m)
            .ok_or_else(|| anyhow!("{name}: no {m} was measured (every request failed)"))
    };
    Ok(ModelFigures {
        name: name.to_string(),
        file: file.display().to_string(),
        weight_bytes: shape.weight_bytes.unwrap_or(0),
        params: shape.params,
        context: a.context,
        parallel,
        load_s: fig(&loads, "seconds from start to /health answering")?,
        allocated_bytes: allocated,
        planned_bytes: planned,
        prefill_tps: fig(
            &prefill,
            &format!("prompt tokens / time to first token, one stream, ~{prompt}-token prompts"),
        )?,
        decode_tps_1: fig(&decode1, "1 / mean time between tokens, one stream, greedy")?,
        decode_tps_n: fig(
            &decoden,
            &format!("{parallel} streams x 1 / mean time between tokens, greedy"),
        )?,
    })
}

fn summary(a: &Assessment, path: &Path) -> String {
    let mut s = format!(
        "This machine ({} cores, {:.1} GB, {}), {}:\n",
        a.cores, a.memory_gb, a.backend, a.build
    );
    if let Some(b) = &a.bandwidth_gbs {
        s += &format!(
            "  memory bandwidth: {:.1} GB/s ({:.1}-{:.1}; {})\n",
            b.median, b.min, b.max, b.method
        );
    }
    if let Some(f) = &a.decode_fit {
        s += &format!(
            "  decode model fit: {:.0}% of that bandwidth, {:.1} us a layer, batched decode at {:.3} TFLOPS ({})\n",
            f.memory_share * 100.0,
            f.per_layer_s * 1e6,
            f.decode_tflops.unwrap_or(0.0),
            f.source
        );
    }
    for m in &a.models {
        s += &format!(
            "  {}: loads in {:.1} s; {:.0} MB allocated, {:.0} MB planned; prefill {:.0} tok/s; decode {:.1} tok/s at 1 stream, {:.1} at {} (spread {:.0}%)\n",
            m.name,
            m.load_s.median,
            m.allocated_bytes as f64 / 1e6,
            m.planned_bytes as f64 / 1e6,
            m.prefill_tps.median,
            m.decode_tps_1.median,
            m.decode_tps_n.median,
            m.parallel,
            m.decode_tps_1.spread() * 100.0,
        );
    }
    s += &format!(
        "Written to {}; `aula plan --hardware this` plans with it.\n",
        path.display()
    );
    s
}
