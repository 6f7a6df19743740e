//! A real JupyterHub (PyPI `jupyterhub`, with its npm proxy
//! `configurable-http-proxy`) on loopback, configured as the README says.

use super::free_port;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const AULA_SERVICE_TOKEN: &str = "aula-service-token-for-the-test-0123456789";
pub const ADMIN_TOKEN: &str = "admin-bot-token-for-the-test-0123456789";

pub struct Hub {
    child: Child,
    dir: PathBuf,
    /// The Hub itself (its REST API under /hub/api).
    pub api: String,
    /// The proxy in front of it: what browsers open.
    pub public: String,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Hub {
    pub fn stop(&mut self) {
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

    pub fn start() -> Hub {
        Hub::start_with(None)
    }

    /// A Hub whose `aula` service may sign users in with OAuth, sending
    /// them back to `redirect` (Aula's `/oauth_callback`).
    pub fn start_with(redirect: Option<&str>) -> Hub {
        let oauth = redirect
            .map(|r| format!(", \"oauth_redirect_uri\": \"{r}\", \"oauth_no_confirm\": True"))
            .unwrap_or_default();
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
    {{"name": "aula", "api_token": "{AULA_SERVICE_TOKEN}"{oauth}}},
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
            public: format!("http://127.0.0.1:{proxy_port}"),
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

    pub fn admin(&self, method: &str, path: &str, body: Value) -> Value {
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

    pub fn token(&self, user: &str, scopes: &[&str]) -> String {
        let v = self.admin(
            "POST",
            &format!("/users/{user}/tokens"),
            json!({"scopes": scopes, "note": "aula test"}),
        );
        v["token"].as_str().unwrap().to_string()
    }
}
