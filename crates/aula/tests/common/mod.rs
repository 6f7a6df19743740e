//! Helpers for the end-to-end tests: they run the real `aula` binary on
//! free loopback ports, against the real models that set-up installed.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod browser;
pub mod hub;
pub mod pg;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SMOL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA_FILE: &str = "gemma-3-270m-q4_k_m.gguf";
pub const SMOL: &str = "smollm2-135m-instruct.q4_1";
pub const GEMMA: &str = "gemma-3-270m-q4_k_m";

pub fn aula_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_aula"))
}

/// The directory with the two built-in models (placed by scripts/setup.sh).
pub fn models_dir() -> PathBuf {
    let dir = aula_gateway::home::models_dir();
    for f in [SMOL_FILE, GEMMA_FILE] {
        assert!(
            dir.join(f).exists(),
            "{} is missing: run `bash scripts/setup.sh` (or set AULA_HOME to where the models are)",
            dir.join(f).display()
        );
    }
    dir
}

pub fn model_path(file: &str) -> PathBuf {
    models_dir().join(file)
}

/// A child process killed when the test ends, however it ends.
pub struct Proc {
    pub child: Child,
    pub url: String,
    pub output: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first so `aula serve` can stop its engines, then make sure.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn output(&self) -> String {
        self.output.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Start `aula ARGS` and wait for the line that announces its URL.
pub fn spawn_aula(args: &[&str], home: Option<&std::path::Path>) -> Proc {
    spawn_exe(&aula_exe(), args, home)
}

/// The OpenAI stand-in built beside `aula` (scripts/setup.sh builds every binary).
pub fn mock_exe() -> PathBuf {
    let p = aula_exe().with_file_name("openai-mock");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --release --bins`",
        p.display()
    );
    p
}

/// Start the mock engine; `token_ms` paces its 4 tokens like a real engine.
pub fn spawn_mock(token_ms: u64) -> Proc {
    spawn_exe(
        &mock_exe(),
        &["0", "--token-ms", &token_ms.to_string()],
        None,
    )
}

/// Run `aula ARGS` to completion: (success, stdout, stderr).
pub fn run_aula(args: &[&str], home: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(aula_exe())
        .args(args)
        .env("AULA_HOME", home)
        .output()
        .expect("run aula");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run `aula ARGS` (no home), which must succeed: its stdout as JSON.
pub fn aula_json(args: &[&str]) -> Value {
    let out = Command::new(aula_exe())
        .args(args)
        .output()
        .expect("run aula");
    assert!(
        out.status.success(),
        "aula {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("aula's --json output")
}

/// `aula users add NAME EXTRA...` and `aula keys create NAME` in `home`:
/// the new user's key.
pub fn add_user(home: &std::path::Path, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["users", "add", name];
    args.extend_from_slice(extra);
    let (ok, _, err) = run_aula(&args, home);
    assert!(ok, "users add {name}: {err}");
    let (ok, out, err) = run_aula(&["keys", "create", name], home);
    assert!(ok, "keys create {name}: {err}");
    assert_eq!(out.lines().count(), 1, "the key alone on stdout: {out:?}");
    out.trim().to_string()
}

pub fn post_auth(url: &str, key: Option<&str>, body: &Value) -> Resp {
    let mut req = agent().post(url).set("Content-Type", "application/json");
    if let Some(k) = key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    read(&format!("POST {url}"), req.send_string(&body.to_string()))
}

pub fn post_headers(url: &str, headers: &[(&str, &str)], body: &Value) -> Resp {
    let mut req = agent().post(url).set("Content-Type", "application/json");
    for (k, v) in headers {
        req = req.set(k, v);
    }
    read(&format!("POST {url}"), req.send_string(&body.to_string()))
}

pub fn get_auth(url: &str, key: Option<&str>) -> Resp {
    let mut req = agent().get(url);
    if let Some(k) = key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    read(&format!("GET {url}"), req.call())
}

pub fn spawn_exe(exe: &std::path::Path, args: &[&str], home: Option<&std::path::Path>) -> Proc {
    spawn_exe_env(exe, args, home, &[])
}

/// `aula ARGS` with extra environment variables.
pub fn spawn_aula_env(args: &[&str], home: Option<&std::path::Path>, env: &[(&str, &str)]) -> Proc {
    spawn_exe_env(&aula_exe(), args, home, env)
}

pub fn spawn_exe_env(
    exe: &std::path::Path,
    args: &[&str],
    home: Option<&std::path::Path>,
    env: &[(&str, &str)],
) -> Proc {
    let mut cmd = Command::new(exe);
    cmd.envs(env.iter().copied());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(h) = home {
        cmd.env("AULA_HOME", h);
    }
    let mut child = cmd.spawn().expect("start aula");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out2 = output.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(i) = line.find("listening on http://") {
                let url: String = line[i + "listening on ".len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let _ = tx.send(url);
            }
            out2.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let out3 = output.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            out3.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(url) => Proc { child, url, output },
        Err(_) => {
            let _ = child.kill();
            panic!(
                "{} {args:?} did not start: {}",
                exe.display(),
                output.lock().unwrap()
            );
        }
    }
}

pub fn spawn_engine(file: &str, extra: &[&str]) -> Proc {
    let path = model_path(file);
    let mut args = vec!["engine", "--model", path.to_str().unwrap(), "--port", "0"];
    args.extend_from_slice(extra);
    spawn_aula(&args, None)
}

pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(300))
        .build()
}

/// Any HTTP status is a response to look at; only transport failures panic.
fn read(what: &str, r: Result<ureq::Response, ureq::Error>) -> Resp {
    let resp = match r {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{what}: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    Resp {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    }
}

pub fn post_raw(url: &str, body: &str) -> Resp {
    read(
        &format!("POST {url}"),
        agent()
            .post(url)
            .set("Content-Type", "application/json")
            .send_string(body),
    )
}

pub fn post(url: &str, body: &Value) -> Resp {
    post_raw(url, &body.to_string())
}

pub fn get(url: &str) -> Resp {
    read(&format!("GET {url}"), agent().get(url).call())
}

pub fn chat_body(model: &str, content: &str, max_tokens: u32) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, "temperature": 0})
}

/// A streamed response: the text of every content chunk, and each parsed event.
pub struct Streamed {
    pub text: String,
    pub events: Vec<Value>,
    pub done: bool,
}

pub fn stream(url: &str, body: &Value) -> Streamed {
    let resp = agent()
        .post(url)
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
        .unwrap_or_else(|e| panic!("stream POST {url}: {e}"));
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    let mut out = Streamed {
        text: String::new(),
        events: Vec::new(),
        done: false,
    };
    for line in BufReader::new(resp.into_reader()).lines() {
        let line = line.unwrap();
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        assert!(!out.done, "data after [DONE]: {data}");
        if data == "[DONE]" {
            out.done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        let choice = &v["choices"][0];
        if let Some(t) = choice["delta"]["content"]
            .as_str()
            .or(choice["text"].as_str())
        {
            out.text.push_str(t);
        }
        out.events.push(v);
    }
    out
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// Children of `pid`, from /proc.
pub fn children_of(pid: u32) -> Vec<u32> {
    aula_fleet::host::children_of(pid)
}

/// The TCP ports process `pid` listens on, from its file descriptors and
/// /proc/net/tcp.
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let mut inodes = std::collections::HashSet::new();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let t = target.to_string_lossy().into_owned();
                if let Some(ino) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                    inodes.insert(ino.to_string());
                }
            }
        }
    }
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            if f.len() > 9
                && f[3] == "0A"
                && inodes.contains(f[9])
                && let Some(port) = f[1]
                    .rsplit(':')
                    .next()
                    .and_then(|h| u16::from_str_radix(h, 16).ok())
            {
                ports.push(port);
            }
        }
    }
    ports
}

/// Does this CPU list AMX (as the engine's probe would see it)?
pub fn cpu_lists_amx() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| c.contains(" amx_int8") && c.contains(" amx_tile"))
        .unwrap_or(false)
}

pub fn alive(pid: u32) -> bool {
    aula_fleet::host::stat(pid).is_some_and(|s| s.state != 'Z')
}

/// A data directory for one test (with an empty `models/`), removed when
/// the test ends, also when it fails.
pub fn temp_home(tag: &str) -> TempHome {
    let dir = std::env::temp_dir().join(format!("aula-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("models")).unwrap();
    TempHome(dir)
}

pub struct TempHome(PathBuf);

/// A gateway under test: a temporary home, an `aula.toml` built up entry by
/// entry, and `aula serve` on a free port.
///
/// ```ignore
/// let g = TestGateway::new("tag").url_model("mock", &mock.url);
/// let s = g.start();
/// ```
pub struct TestGateway {
    pub home: TempHome,
    config: String,
}

impl TestGateway {
    pub fn new(tag: &str) -> TestGateway {
        TestGateway {
            home: temp_home(tag),
            config: String::new(),
        }
    }

    /// Any TOML, appended to `aula.toml`.
    pub fn config(mut self, toml: &str) -> TestGateway {
        self.config.push_str(toml);
        self.config.push('\n');
        self
    }

    /// A model served by a server at `url` (its `/v1` is added).
    pub fn url_model(self, name: &str, url: &str) -> TestGateway {
        self.config(&format!(
            "[[models]]\nname = \"{name}\"\nurl = \"{url}/v1\"\n"
        ))
    }

    /// Write `aula.toml` now (commands such as `aula users` read it for
    /// the database); `start` writes it again.
    pub fn write_config(&self) {
        std::fs::write(self.home.join("aula.toml"), &self.config).unwrap();
    }

    /// `aula serve` with this configuration, once it listens.
    pub fn start(&self) -> Proc {
        let cfg = self.home.join("aula.toml");
        std::fs::write(&cfg, &self.config).unwrap();
        spawn_aula(
            &["serve", "--port", "0", "--config", cfg.to_str().unwrap()],
            Some(&self.home),
        )
    }
}

impl Drop for TempHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl std::ops::Deref for TempHome {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempHome {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl AsRef<std::path::Path> for TempHome {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

/// A stand-in JupyterHub that answers `/hub/api/user` after `delay_ms`:
/// tokens starting with `good-` are users with access, others are refused.
/// `GET /stats` reports how many token checks it got, per token and at most
/// at once.
/// A child process killed when dropped (also when a test fails).
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn counting_hub(delay_ms: u64) -> (Killed, String) {
    let script = format!(
        r#"
import http.server, json, threading, time
lock = threading.Lock()
state = {{"now": 0, "peak": 0, "asked": {{}}}}
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/stats":
            with lock:
                body = json.dumps(state).encode()
            self.send_response(200); self.end_headers(); self.wfile.write(body); return
        token = self.headers.get("Authorization", "").split(" ", 1)[-1]
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
            state["asked"][token] = state["asked"].get(token, 0) + 1
        time.sleep({delay})
        with lock:
            state["now"] -= 1
        if token.startswith("good-"):
            body = json.dumps({{"kind": "user", "name": token[5:], "groups": [], "scopes": ["access:services"]}}).encode()
            self.send_response(200); self.end_headers(); self.wfile.write(body)
        else:
            self.send_response(403); self.end_headers(); self.wfile.write(b"{{}}")
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
s.daemon_threads = True
s.request_queue_size = 1024
print(s.server_address[1], flush=True)
s.serve_forever()
"#,
        delay = delay_ms as f64 / 1000.0
    );
    let (hub, port) = python_child(&["-c", &script]);
    (hub, format!("http://127.0.0.1:{port}"))
}

/// `python3 ARGS`, killed when dropped, and the first line it prints.
pub fn python_child(args: &[&str]) -> (Killed, String) {
    let mut child = std::process::Command::new("python3")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    (Killed(child), line.trim().to_string())
}

/// Upload `bytes` as `name` with `key` (multipart, as the `openai` client
/// sends it); the new file's id.
pub fn upload(url: &str, key: &str, name: &str, bytes: &[u8], purpose: &str) -> String {
    let (status, v) = upload_raw(url, Some(key), name, bytes, purpose);
    assert_eq!(status, 200, "{v}");
    v["id"].as_str().unwrap().to_string()
}

/// The same, answering (status, body).
pub fn upload_raw(
    url: &str,
    key: Option<&str>,
    name: &str,
    bytes: &[u8],
    purpose: &str,
) -> (u16, Value) {
    let boundary = "aulaTestBoundary7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut req = ureq::post(&format!("{url}/v1/files")).set(
        "Content-Type",
        &format!("multipart/form-data; boundary={boundary}"),
    );
    if let Some(k) = key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    match req.send_bytes(&body) {
        Ok(r) | Err(ureq::Error::Status(_, r)) => {
            let status = r.status();
            let text = r.into_string().unwrap_or_default();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        }
        Err(e) => panic!("upload: {e}"),
    }
}

/// The Python the tests run clients with (`AULA_TEST_PYTHON`, else
/// `python3`), checked to import `modules` (comma-separated, as in Python).
pub fn python_with(modules: &str) -> String {
    let python = std::env::var("AULA_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .output()
        .map(|o| o.status.success());
    assert!(
        matches!(ok, Ok(true)),
        "the Python packages {modules} are needed: run `bash scripts/test.sh` \
         (or set AULA_TEST_PYTHON to a Python that has them; now: {python})"
    );
    python
}

/// A port free on loopback now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sign in on the web page with plain HTTP (no browser): the session
/// cookie (`aula_session=...`) of the signed-in session.
pub fn web_sign_in(base: &str, key: &str) -> String {
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let r = agent.get(&format!("{base}/signin")).call().unwrap();
    let cookie = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let html = r.into_string().unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let r = agent
        .post(&format!("{base}/signin"))
        .set("Cookie", &cookie)
        .send_form(&[("csrf", &csrf), ("token", key), ("next", "/")]);
    let r = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(r.status(), 303);
    r.header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}
