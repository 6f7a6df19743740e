//! JupyterHub tokens as credentials, against a real JupyterHub (PyPI
//! `jupyterhub`, with its npm proxy `configurable-http-proxy`) started by the
//! test on loopback, configured as the README says.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;
use common::*;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const AULA_SERVICE_TOKEN: &str = "aula-service-token-for-the-test-0123456789";
const ADMIN_TOKEN: &str = "admin-bot-token-for-the-test-0123456789";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Hub {
    child: Child,
    dir: PathBuf,
    api: String,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Hub {
    fn stop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn start() -> Hub {
        let python = std::env::var("AULA_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let jupyterhub = PathBuf::from(&python).with_file_name("jupyterhub");
        assert!(
            jupyterhub.exists(),
            "{} is missing: run `bash scripts/test.sh` (it installs jupyterhub into .venv) or set AULA_TEST_PYTHON",
            jupyterhub.display()
        );
        let chp = std::env::var("AULA_TEST_CHP").unwrap_or_else(|_| {
            let local = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../.cache/chp/node_modules/.bin/configurable-http-proxy");
            local.to_string_lossy().into_owned()
        });
        assert!(
            PathBuf::from(&chp).exists(),
            "configurable-http-proxy is missing ({chp}): run `bash scripts/test.sh` or set AULA_TEST_CHP"
        );
        let dir = std::env::temp_dir().join(format!("aula-hub-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (hub_port, proxy_port, api_port) = (free_port(), free_port(), free_port());
        // The README's lines (roles and service), plus test-only plumbing.
        let cfg = format!(
            r#"
c.JupyterHub.services = [
    {{"name": "aula", "api_token": "{AULA_SERVICE_TOKEN}"}},
    {{"name": "admin-bot", "api_token": "{ADMIN_TOKEN}"}},
]
c.JupyterHub.load_roles = [
    {{"name": "user", "scopes": ["self", "access:services!service=aula"]}},
    {{"name": "server", "scopes": ["users:activity!user", "access:servers!server", "access:services!service=aula"]}},
    {{"name": "aula-service", "scopes": ["read:users:name", "read:users:groups"], "services": ["aula"]}},
    {{"name": "admin-bot", "scopes": ["admin:users", "admin:groups", "tokens"], "services": ["admin-bot"]}},
]
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {proxy_port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
c.ConfigurableHTTPProxy.command = ["{chp}"]
c.JupyterHub.db_url = "sqlite:///{dir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{dir}/cookie_secret"
"#,
            dir = dir.display()
        );
        std::fs::write(dir.join("jupyterhub_config.py"), cfg).unwrap();
        let log = std::fs::File::create(dir.join("hub.log")).unwrap();
        let child = Command::new(&jupyterhub)
            .arg("-f")
            .arg(dir.join("jupyterhub_config.py"))
            .current_dir(&dir)
            .env("CONFIGPROXY_AUTH_TOKEN", "proxy-token-for-the-test")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let hub = Hub {
            child,
            api: format!("http://127.0.0.1:{hub_port}"),
            dir,
        };
        let probe = format!("{}/hub/api/", hub.api);
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            if ureq::get(&probe).call().is_ok() {
                break;
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "JupyterHub did not start: {}",
                    std::fs::read_to_string(hub.dir.join("hub.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        hub
    }

    fn admin(&self, method: &str, path: &str, body: Value) -> Value {
        let r = ureq::request(method, &format!("{}/hub/api{path}", self.api))
            .set("Authorization", &format!("token {ADMIN_TOKEN}"))
            .send_string(&body.to_string());
        match r {
            Ok(r) => serde_json::from_str(&r.into_string().unwrap()).unwrap_or(Value::Null),
            Err(ureq::Error::Status(code, r)) => {
                panic!(
                    "{method} {path}: {code} {}",
                    r.into_string().unwrap_or_default()
                )
            }
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }

    fn token(&self, user: &str, scopes: &[&str]) -> String {
        let v = self.admin(
            "POST",
            &format!("/users/{user}/tokens"),
            json!({"scopes": scopes, "note": "aula test"}),
        );
        v["token"].as_str().unwrap().to_string()
    }
}

#[test]
fn jupyterhub_tokens_are_accepted_only_with_access_to_the_service() {
    let mut hub = Hub::start();
    hub.admin("POST", "/users/alice", json!({}));
    hub.admin("POST", "/groups/cs101", json!({"users": ["alice"]}));
    let good = hub.token("alice", &["access:services!service=aula"]);
    let spare = hub.token("alice", &["access:services!service=aula"]);
    let no_access = hub.token("alice", &["read:users:name!user"]);

    let mock = spawn_mock(0);
    let home = temp_home("hub");
    std::fs::write(
        home.join("aula.toml"),
        format!(
            "[[models]]\nname = \"mock\"\nurl = \"{}\"\n\n[jupyterhub]\nurl = \"{}\"\napi_token = \"{AULA_SERVICE_TOKEN}\"\ncache_seconds = 30\ntimeout_seconds = 2\n",
            mock.url, hub.api
        ),
    )
    .unwrap();
    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    let url = format!("{}/v1/chat/completions", s.url);
    let body =
        json!({"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});

    let r = post_auth(&url, Some(&good), &body);
    assert_eq!(r.status, 200, "{}", r.text);
    for bad in [no_access.as_str(), "not-a-hub-token"] {
        let r = post_auth(&url, Some(bad), &body);
        assert_eq!(r.status, 401, "{}", r.text);
        assert!(!r.text.contains(bad));
    }
    assert_eq!(post_auth(&url, None, &body).status, 401);
    let (ok, out, err) = run_aula(&["usage", "--by", "group", "--json"], &home);
    assert!(ok, "{err}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .any(|r| r["key"] == "cs101" && r["ok"] == 1),
        "{rows}"
    );

    // The Hub goes down: a token Aula has not seen is never accepted; the
    // answer is a clear 503, not a 401 that would make a notebook give up.
    hub.stop();
    let r = post_auth(&url, Some(&spare), &body);
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.text.contains("JupyterHub"), "{}", r.text);
    assert!(!s.output().contains(&good) && !s.output().contains(&spare));
    drop(s);
}
