//! A real browser for the web page's tests: Debian's Chromium, headless,
//! driven through chromedriver (WebDriver) with `fantoccini`; axe-core for
//! accessibility; screenshots into `target/web-screenshots/`.

use super::{Killed, free_port, wait_for};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn axe_source() -> String {
    let p = std::env::var("AULA_TEST_AXE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join(".cache/axe/node_modules/axe-core/axe.min.js"));
    std::fs::read_to_string(&p).unwrap_or_else(|_| {
        panic!(
            "{} is missing: run `bash scripts/test.sh` (it installs axe-core from npm) or set AULA_TEST_AXE",
            p.display()
        )
    })
}

/// chromedriver on a free port, killed at the end.
pub fn chromedriver() -> (Killed, String) {
    let exe = std::env::var("AULA_TEST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let port = free_port();
    let child = Command::new(&exe)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {exe}: {e}; run `bash scripts/test.sh` (it installs chromium and chromium-driver)")
        });
    let url = format!("http://127.0.0.1:{port}");
    wait_for("chromedriver", Duration::from_secs(20), || {
        ureq::get(&format!("{url}/status")).call().is_ok()
    });
    (Killed(child), url)
}

/// A fresh headless Chromium with its own profile.
pub async fn browser(driver: &str, profile: &std::path::Path) -> Client {
    let binary = std::env::var("AULA_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": binary,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(driver)
        .await
        .expect("a WebDriver session with Chromium")
}

pub struct Page<'a> {
    pub c: &'a Client,
    pub base: String,
    pub driver: String,
    pub axe: String,
    pub shots: PathBuf,
}

impl<'a> Page<'a> {
    /// The page of the gateway at `base`, in the browser `c` of `driver`.
    pub fn new(c: &'a Client, base: &str, driver: &str) -> Page<'a> {
        let shots = repo().join("target/web-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Page {
            c,
            base: base.to_string(),
            driver: driver.to_string(),
            axe: axe_source(),
            shots,
        }
    }

    pub async fn go(&self, path: &str) {
        self.c.goto(&format!("{}{path}", self.base)).await.unwrap();
    }

    /// The page's text (waiting out a navigation in progress).
    pub async fn body(&self) -> String {
        let mut last = None;
        for _ in 0..50 {
            match self.c.find(Locator::Css("body")).await {
                Ok(e) => match e.text().await {
                    Ok(t) => return t,
                    Err(e) => last = Some(e),
                },
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the page has no text: {last:?}")
    }

    pub async fn h1(&self) -> String {
        self.c
            .find(Locator::Css("h1"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn path(&self) -> String {
        self.c.current_url().await.unwrap().path().to_string()
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.c.find(Locator::Css(css)).await.unwrap();
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.c
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    pub async fn sign_in(&self, key: &str) {
        self.go("/signin").await;
        self.fill("#token", key).await;
        self.click("form[action$='/signin'] button").await;
    }

    /// Wait until `f` holds for the page's text.
    pub async fn until(&self, what: &str, mut f: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let b = self.body().await;
            if f(&b) {
                return b;
            }
            assert!(Instant::now() < deadline, "{what}: the page says:\n{b}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Wait until the browser is at `path`.
    pub async fn until_path(&self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.path().await != path {
            assert!(
                Instant::now() < deadline,
                "not at {path} but at {}",
                self.path().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until an element matches `css`.
    pub async fn until_css(&self, what: &str, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.c.find(Locator::Css(css)).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "{what}: the page says:\n{}",
                self.body().await
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The colour scheme, through Chrome's DevTools (chromedriver's own endpoint).
    pub fn scheme(&self, sid: &str, dark: bool) {
        let r = ureq::post(&format!("{}/session/{sid}/goog/cdp/execute", self.driver)).send_json(json!({
            "cmd": "Emulation.setEmulatedMedia",
            "params": {"features": [{"name": "prefers-color-scheme", "value": if dark { "dark" } else { "light" }}]}
        }));
        assert!(r.is_ok(), "cannot set the colour scheme: {r:?}");
    }

    /// axe-core on this page, in both schemes: no serious or critical
    /// violation; a screenshot of each.
    pub async fn check(&self, name: &str) {
        let sid = self.c.session_id().await.unwrap().expect("a session id");
        for dark in [false, true] {
            self.scheme(&sid, dark);
            let is_dark: Value = self
                .c
                .execute(
                    "return matchMedia('(prefers-color-scheme: dark)').matches",
                    vec![],
                )
                .await
                .unwrap();
            assert_eq!(is_dark, json!(dark));
            self.c.execute(&self.axe, vec![]).await.unwrap();
            let found: Value = self
                .c
                .execute_async(
                    "const done = arguments[arguments.length - 1];
                     axe.run(document, {resultTypes: ['violations']})
                       .then(r => done(r.violations
                          .filter(v => v.impact === 'serious' || v.impact === 'critical')
                          .map(v => v.id + ' (' + v.impact + '): ' + v.help + ' at ' +
                               v.nodes.map(n => n.target.join(' ')).join(', '))))
                       .catch(e => done(['axe failed: ' + e]));",
                    vec![],
                )
                .await
                .unwrap();
            assert_eq!(
                found,
                json!([]),
                "{name} ({}): accessibility violations",
                if dark { "dark" } else { "light" }
            );
            let png = self.c.screenshot().await.unwrap();
            let scheme = if dark { "dark" } else { "light" };
            std::fs::write(self.shots.join(format!("{name}-{scheme}.png")), png).unwrap();
        }
        self.scheme(&sid, false);
    }
}
