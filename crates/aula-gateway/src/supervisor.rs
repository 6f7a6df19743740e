//! Engine child processes: `aula engine` started on a free loopback port,
//! waited for until healthy, restarted with backoff when it dies, and stopped
//! with the gateway. Children are also tied to the gateway's life by
//! `PR_SET_PDEATHSIG`, so even a SIGKILLed gateway leaves no orphan.

use crate::backend::{HttpBackend, Upstream};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct EngineSpec {
    pub name: String,
    pub gguf: PathBuf,
    pub parallel: Option<usize>,
    pub context: Option<u32>,
    pub threads: Option<usize>,
    /// Another engine's program and arguments (`{port}` is replaced by the
    /// port Aula picked); None runs `aula engine`.
    pub launch: Option<(String, Vec<String>)>,
    /// Which replica of the model this is (0 for the first).
    pub replica: usize,
}

impl EngineSpec {
    /// `engine-NAME.log`, or `engine-NAME.rN.log` for replica N > 0.
    pub fn log_file(&self) -> String {
        if self.replica == 0 {
            format!("engine-{}.log", self.name)
        } else {
            format!("engine-{}.r{}.log", self.name, self.replica)
        }
    }
}

/// Logs larger than this are moved to `.log.1` when their engine starts.
const LOG_ROTATE_BYTES: u64 = 10 << 20;

pub struct Supervisor {
    /// The `aula` executable that runs `aula engine`.
    pub exe: PathBuf,
    pub logs: PathBuf,
    pub ready_timeout: Duration,
}

fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl Supervisor {
    fn spawn(&self, spec: &EngineSpec, port: u16) -> std::io::Result<Child> {
        std::fs::create_dir_all(&self.logs)?;
        let log_path = self.logs.join(spec.log_file());
        if std::fs::metadata(&log_path).is_ok_and(|m| m.len() > LOG_ROTATE_BYTES) {
            let _ = std::fs::rename(&log_path, log_path.with_extension("log.1"));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut cmd = if let Some((program, args)) = &spec.launch {
            let mut words = program.split_whitespace();
            let mut c = Command::new(words.next().unwrap_or(program.as_str()));
            c.args(words);
            c.args(args.iter().map(|a| a.replace("{port}", &port.to_string())));
            c
        } else {
            let mut c = Command::new(&self.exe);
            c.arg("engine");
            c
        };
        if spec.launch.is_none() {
            cmd.arg("--model")
                .arg(&spec.gguf)
                .arg("--name")
                .arg(&spec.name)
                .arg("--host")
                .arg("127.0.0.1")
                .arg("--port")
                .arg(port.to_string());
            if let Some(p) = spec.parallel {
                cmd.arg("--parallel").arg(p.to_string());
            }
            if let Some(c) = spec.context {
                cmd.arg("--context").arg(c.to_string());
            }
            if let Some(t) = spec.threads {
                cmd.arg("--threads").arg(t.to_string());
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn()
    }

    /// Keep one engine running until `stop` says true: start, wait healthy,
    /// publish its address on `backend`, and restart it with backoff when it
    /// exits.
    pub async fn keep_running(
        self: Arc<Self>,
        spec: EngineSpec,
        backend: Arc<HttpBackend>,
        stop: watch::Receiver<bool>,
    ) {
        let client = crate::backend::http_client();
        let mut backoff = Duration::from_millis(250);
        let mut shutdown = stop;
        let mut port = None;
        loop {
            if *shutdown.borrow() {
                backend.set(Upstream::Stopped);
                return;
            }
            let p = match port.filter(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok()) {
                Some(p) => p,
                None => match free_port() {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(model = %spec.name, "no free port: {e}");
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                },
            };
            port = Some(p);
            let started = Instant::now();
            let mut child = match self.spawn(&spec, p) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(model = %spec.name, "cannot start engine {}: {e}", self.exe.display());
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            let base = format!("http://127.0.0.1:{p}");
            backend.set_pid(child.id());
            tracing::info!(model = %spec.name, pid = child.id().unwrap_or(0), "engine starting on {base}");
            let ready = tokio::select! {
                r = wait_healthy(&client, &base, &mut child, self.ready_timeout) => r,
                _ = shutdown.changed() => { stop_child(&mut child).await; backend.set(Upstream::Stopped); return; }
            };
            match ready {
                Ok(()) => {
                    tracing::info!(model = %spec.name, "engine ready after {:.1}s", started.elapsed().as_secs_f64());
                    backend.set_load_time(started.elapsed());
                    backend.set(Upstream::Ready(base));
                    let status = tokio::select! {
                        s = child.wait() => s,
                        _ = shutdown.changed() => {
                            backend.set(Upstream::Stopped);
                            stop_child(&mut child).await;
                            return;
                        }
                    };
                    backend.set(Upstream::Starting);
                    let log = self.logs.join(spec.log_file());
                    tracing::warn!(model = %spec.name, "engine exited ({}); restarting in {:?}; its log is {}",
                        status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()), backoff, log.display());
                    if started.elapsed() > Duration::from_secs(60) {
                        backoff = Duration::from_millis(250);
                    }
                }
                Err(why) => {
                    stop_child(&mut child).await;
                    let log = self.logs.join(spec.log_file());
                    let why = match last_error_line(&log) {
                        Some(line) => format!("{why}: {line}"),
                        None => why,
                    };
                    tracing::error!(model = %spec.name, "engine did not become ready: {why}; see {}", log.display());
                    backend.set(Upstream::Failed(why));
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => { backend.set(Upstream::Stopped); return; }
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}

async fn wait_healthy(
    client: &crate::backend::HttpClient,
    base: &str,
    child: &mut Child,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited during start-up ({status})"));
        }
        if Instant::now() > deadline {
            return Err(format!("not healthy after {}s", timeout.as_secs()));
        }
        let req = axum::http::Request::get(format!("{base}/health"))
            .body(http_body_util::Full::new(bytes::Bytes::new()));
        if let Ok(req) = req
            && let Ok(Ok(resp)) =
                tokio::time::timeout(Duration::from_secs(2), client.request(req)).await
            && resp.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The engine's own last error message, from the end of its log.
fn last_error_line(log: &std::path::Path) -> Option<String> {
    let text = std::fs::read(log).ok()?;
    let tail = String::from_utf8_lossy(&text[text.len().saturating_sub(8192)..]).into_owned();
    tail.lines()
        .rev()
        .find(|l| l.contains("error"))
        .map(|l| l.trim().trim_start_matches("aula: error: ").to_string())
}

/// SIGTERM, a grace period, then SIGKILL; always reaps the child.
pub async fn stop_child(child: &mut Child) {
    if let Some(pid) = child.id() {
        // SAFETY: sending a signal to our own child's pid.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}
