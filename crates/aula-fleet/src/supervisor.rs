//! Engine child processes — `aula engine`, llama-server, vLLM, SGLang —
//! started on a loopback port, waited for until healthy, restarted with
//! backoff when they die or stop answering, and stopped with the gateway. Children are also tied to the gateway's life by
//! `PR_SET_PDEATHSIG`, so even a SIGKILLed gateway leaves no orphan.
//!
//! Only the gateway may talk to its engines (students may have shells on the
//! box, and loopback is shared):
//! * each start gets a fresh random key, passed in the child's environment
//!   (`AULA_ENGINE_KEY`; for other engines `LLAMA_API_KEY` and
//!   `VLLM_API_KEY`, or `{api_key}` in their arguments), never on a command
//!   line; the engine requires it on every request, and the gateway sends it;
//! * `aula engine` inherits a socket the gateway bound and never released
//!   (file descriptor 3), so no other process can take its port first. Other
//!   engines bind the port themselves after it was found free.

use crate::backend::{HttpBackend, Upstream, probe};
use crate::launch::Launch;
use aula_protocol::admin::EngineKind;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// One engine process to keep running.
#[derive(Debug, Clone)]
pub struct EngineSpec {
    pub name: String,
    pub launch: Launch,
    pub kind: EngineKind,
    /// Which replica of the model this is (0 for the first).
    pub replica: usize,
    /// vLLM: the adapters it loads after starting (crate::adapters).
    pub lora_dir: Option<PathBuf>,
}

impl EngineSpec {
    /// `engine-NAME.log`, or `engine-NAME.rN.log` for replica N > 0. A model
    /// name is not a path: every character but ASCII letters, digits, `-`,
    /// `_` and `.` becomes `_` (`org/tiny` logs to `engine-org_tiny.log`),
    /// so a name can never point outside the log directory.
    pub fn log_file(&self) -> String {
        let safe: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if self.replica == 0 {
            format!("engine-{safe}.log")
        } else {
            format!("engine-{safe}.r{}.log", self.replica)
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
    /// How often a running engine's `/health` is checked; three failures in
    /// a row (each allowed a third of this) and it is restarted.
    pub liveness: Duration,
}

/// The liveness check's default interval.
pub const LIVENESS_INTERVAL: Duration = Duration::from_secs(15);

/// Resolves when the engine at `base` has failed its health check three
/// times in a row (never, while it answers).
async fn wedged(client: &crate::backend::HttpClient, base: &str, key: &str, every: Duration) {
    let url = format!("{base}/health");
    let mut failures = 0;
    loop {
        tokio::time::sleep(every).await;
        let ok = probe(client, &url, Some(key), every / 3).await.is_some();
        failures = if ok { 0 } else { failures + 1 };
        if failures >= 3 {
            return;
        }
    }
}

fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A fresh key for one engine start: 32 random bytes, hex.
fn engine_key() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Where a new engine will listen: a socket already bound (for `aula
/// engine`, which inherits it), or a port found free (for other engines).
enum Listen {
    Socket(std::net::TcpListener),
    Port(u16),
}

impl Listen {
    fn port(&self) -> std::io::Result<u16> {
        match self {
            Listen::Socket(l) => Ok(l.local_addr()?.port()),
            Listen::Port(p) => Ok(*p),
        }
    }
}

/// A command line fit for a log: the value after any option that names a
/// key, token, secret or password is replaced by `***` (`--api-key X`,
/// `--hf-token=X`).
pub fn redact_args(args: &[String]) -> Vec<String> {
    let secret = |opt: &str| {
        let o = opt.to_ascii_lowercase();
        o.starts_with('-')
            && ["key", "token", "secret", "password", "passwd"]
                .iter()
                .any(|w| o.contains(w))
    };
    let mut out = Vec::with_capacity(args.len());
    let mut hide_next = false;
    for a in args {
        if hide_next {
            out.push("***".to_string());
            hide_next = false;
        } else if let Some((opt, _)) = a.split_once('=')
            && secret(opt)
        {
            out.push(format!("{opt}=***"));
        } else {
            hide_next = secret(a);
            out.push(a.clone());
        }
    }
    out
}

/// The file descriptor number the engine finds its socket at.
const LISTEN_FD: i32 = 3;

impl Supervisor {
    fn spawn(&self, spec: &EngineSpec, listen: &Listen, key: &str) -> std::io::Result<Child> {
        let port = listen.port()?;
        std::fs::create_dir_all(&self.logs)?;
        let log_path = self.logs.join(spec.log_file());
        if std::fs::metadata(&log_path).is_ok_and(|m| m.len() > LOG_ROTATE_BYTES) {
            let _ = std::fs::rename(&log_path, log_path.with_extension("log.1"));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut cmd = match &spec.launch {
            Launch::External { program, args } => {
                let mut words = program.split_whitespace();
                let mut c = Command::new(words.next().unwrap_or(program.as_str()));
                c.args(words);
                c.args(args.iter().map(|a| {
                    a.replace("{port}", &port.to_string())
                        .replace("{api_key}", key)
                }));
                c.env("LLAMA_API_KEY", key).env("VLLM_API_KEY", key);
                if spec.lora_dir.is_some() {
                    let (k, v) = crate::adapters::RUNTIME_UPDATES_ENV;
                    c.env(k, v);
                }
                c
            }
            Launch::Embedded { .. } => {
                let mut c = Command::new(&self.exe);
                c.args(spec.launch.embedded_args(&spec.name))
                    .env("AULA_ENGINE_KEY", key);
                if let Listen::Socket(_) = listen {
                    c.arg("--listen-fd").arg(LISTEN_FD.to_string());
                } else {
                    c.arg("--host")
                        .arg("127.0.0.1")
                        .arg("--port")
                        .arg(port.to_string());
                }
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let socket_fd = match listen {
            Listen::Socket(l) => {
                use std::os::fd::AsRawFd;
                Some(l.as_raw_fd())
            }
            Listen::Port(_) => None,
        };
        #[cfg(target_os = "linux")]
        // SAFETY: prctl and dup2 are async-signal-safe; nothing else runs
        // between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // A process group of its own, so stopping the engine stops
                // the workers it starts (vLLM, SGLang) too.
                if libc::setpgid(0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // dup2 leaves the copy open across exec (no FD_CLOEXEC); a
                // socket that already is fd 3 only needs the flag cleared.
                if let Some(fd) = socket_fd {
                    let r = if fd == LISTEN_FD {
                        libc::fcntl(fd, libc::F_SETFD, 0)
                    } else {
                        libc::dup2(fd, LISTEN_FD)
                    };
                    if r < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
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
            let (listen, p) = match listen_for(&spec, port) {
                Ok(lp) => lp,
                Err(e) => {
                    tracing::error!(model = %spec.name, "no free port: {e}");
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            };
            port = Some(p);
            let key = engine_key();
            backend.set_secret(Some(key.clone()));
            let started = Instant::now();
            let spawned = self.spawn(&spec, &listen, &key);
            // The child has its own copy of the socket now.
            drop(listen);
            let mut child = match spawned {
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
                r = wait_healthy(&client, &base, &key, &mut child, self.ready_timeout) => r,
                _ = shutdown.changed() => { stop_child(&mut child).await; backend.set(Upstream::Stopped); return; }
            };
            match ready {
                Ok(()) => {
                    // Its fine-tuned models before its first request.
                    if let Some(dir) = &spec.lora_dir {
                        for e in crate::adapters::load_all(&client, &base, Some(&key), dir).await {
                            tracing::warn!(model = %spec.name, "{e}");
                        }
                    }
                    tracing::info!(model = %spec.name, "engine ready after {:.1}s", started.elapsed().as_secs_f64());
                    backend.set_load_time(started.elapsed());
                    backend.set(Upstream::Ready(base.clone()));
                    let up = Up {
                        client: &client,
                        base: &base,
                        key: &key,
                    };
                    let Some(status) = self
                        .serve(&spec, &backend, &mut child, up, &mut shutdown)
                        .await
                    else {
                        return;
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

/// Where the next start of `spec` listens: the same port as last time when
/// it is still free (so a restarted engine keeps its address), else a new
/// one; a socket Aula holds for `aula engine`, a port for other engines.
fn listen_for(spec: &EngineSpec, last: Option<u16>) -> std::io::Result<(Listen, u16)> {
    let listen = if matches!(spec.launch, Launch::Embedded { .. }) {
        last.and_then(|p| std::net::TcpListener::bind(("127.0.0.1", p)).ok())
            .map(Ok)
            .unwrap_or_else(|| std::net::TcpListener::bind("127.0.0.1:0"))
            .map(Listen::Socket)?
    } else {
        match last.filter(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok()) {
            Some(p) => Listen::Port(p),
            None => Listen::Port(free_port()?),
        }
    };
    let port = listen.port()?;
    Ok((listen, port))
}

/// A ready engine's address, key and the client that checks it.
struct Up<'a> {
    client: &'a crate::backend::HttpClient,
    base: &'a str,
    key: &'a str,
}

impl Supervisor {
    /// Watch a ready engine until it exits or stops answering (then it is
    /// stopped, to be restarted); None when shutdown came first.
    async fn serve(
        &self,
        spec: &EngineSpec,
        backend: &HttpBackend,
        child: &mut Child,
        up: Up<'_>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<std::io::Result<std::process::ExitStatus>> {
        tokio::select! {
            s = child.wait() => Some(s),
            _ = wedged(up.client, up.base, up.key, self.liveness) => {
                // Alive but not answering: stop it, and restart as after a crash.
                tracing::error!(model = %spec.name, "engine stopped answering its health check; restarting it");
                backend.set(Upstream::Starting);
                stop_child(child).await;
                Some(child.wait().await)
            }
            _ = shutdown.changed() => {
                backend.set(Upstream::Stopped);
                stop_child(child).await;
                None
            }
        }
    }
}

async fn wait_healthy(
    client: &crate::backend::HttpClient,
    base: &str,
    key: &str,
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
        let url = format!("{base}/health");
        if probe(client, &url, Some(key), Duration::from_secs(2))
            .await
            .is_some()
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

/// SIGTERM to the engine's process group, a grace period, then SIGKILL to
/// the group; always reaps the child.
pub async fn stop_child(child: &mut Child) {
    let pid = child.id();
    if let Some(pid) = pid {
        // SAFETY: signalling the process group our child leads (setpgid in spawn).
        unsafe {
            libc::kill(-(pid as i32), libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_ok()
        {
            // Workers that ignored SIGTERM go with their leader.
            // SAFETY: as above; the group outlives its leader while members remain.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
            return;
        }
        // SAFETY: as above.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGKILL);
        }
    }
    let _ = child.kill().await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn spec(name: &str, replica: usize) -> EngineSpec {
        EngineSpec {
            name: name.into(),
            launch: Launch::Embedded {
                gguf: PathBuf::new(),
                parallel: None,
                context: None,
                threads: None,
                flags: Default::default(),
            },
            kind: EngineKind::Embedded,
            replica,
            lora_dir: None,
        }
    }

    #[test]
    fn log_files_stay_in_the_log_directory() {
        assert_eq!(spec("smollm2", 0).log_file(), "engine-smollm2.log");
        assert_eq!(spec("org/tiny", 1).log_file(), "engine-org_tiny.r1.log");
        assert_eq!(spec("../../etc/x", 0).log_file(), "engine-.._.._etc_x.log");
        for name in ["a/b", "../x", "..", "/abs", "a\\b"] {
            let f = spec(name, 0).log_file();
            assert!(!f.contains('/') && !f.contains('\\'), "{f}");
            assert_eq!(std::path::Path::new(&f).components().count(), 1, "{f}");
        }
    }

    #[test]
    fn logged_command_lines_hide_secrets() {
        let args: Vec<String> = [
            "serve",
            "m",
            "--api-key",
            "abc",
            "--hf-token=xyz",
            "--port",
            "8000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let r = redact_args(&args).join(" ");
        assert_eq!(r, "serve m --api-key *** --hf-token=*** --port 8000");
    }

    #[test]
    fn engine_keys_are_fresh_and_long() {
        let (a, b) = (engine_key(), engine_key());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
