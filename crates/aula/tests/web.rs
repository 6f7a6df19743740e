//! The web page in a real browser: Debian's Chromium driven through
//! chromedriver (WebDriver, with `fantoccini`), against a real `aula serve`
//! with the mock engine and the built-in SmolLM2 (loaded from the page).
//! axe-core (installed by scripts/test.sh from npm) checks every page in the
//! light and the dark scheme; screenshots go to `target/web-screenshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn axe_source() -> String {
    let p = std::env::var("AULA_TEST_AXE").map(PathBuf::from).unwrap_or_else(|_| {
        repo().join(".cache/axe/node_modules/axe-core/axe.min.js")
    });
    std::fs::read_to_string(&p).unwrap_or_else(|_| {
        panic!(
            "{} is missing: run `bash scripts/test.sh` (it installs axe-core from npm) or set AULA_TEST_AXE",
            p.display()
        )
    })
}

/// chromedriver on a free port, killed at the end.
fn chromedriver() -> (Killed, String) {
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
async fn browser(driver: &str, profile: &std::path::Path) -> Client {
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

struct Page<'a> {
    c: &'a Client,
    base: String,
    driver: String,
    axe: String,
    shots: PathBuf,
}

impl Page<'_> {
    async fn go(&self, path: &str) {
        self.c.goto(&format!("{}{path}", self.base)).await.unwrap();
    }

    /// The page's text (waiting out a navigation in progress).
    async fn body(&self) -> String {
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

    async fn h1(&self) -> String {
        self.c
            .find(Locator::Css("h1"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn path(&self) -> String {
        self.c.current_url().await.unwrap().path().to_string()
    }

    async fn fill(&self, css: &str, text: &str) {
        let e = self.c.find(Locator::Css(css)).await.unwrap();
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.c.find(Locator::Css(css)).await.unwrap().click().await.unwrap();
    }

    async fn sign_in(&self, key: &str) {
        self.go("/signin").await;
        self.fill("#token", key).await;
        self.click("form[action$='/signin'] button").await;
    }

    /// Wait until `f` holds for the page's text.
    async fn until(&self, what: &str, mut f: impl FnMut(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
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
    async fn until_path(&self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.path().await != path {
            assert!(Instant::now() < deadline, "not at {path} but at {}", self.path().await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until an element matches `css`.
    async fn until_css(&self, what: &str, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.c.find(Locator::Css(css)).await.is_err() {
            assert!(Instant::now() < deadline, "{what}: the page says:\n{}", self.body().await);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The colour scheme, through Chrome's DevTools (chromedriver's own endpoint).
    fn scheme(&self, sid: &str, dark: bool) {
        let r = ureq::post(&format!("{}/session/{sid}/goog/cdp/execute", self.driver)).send_json(json!({
            "cmd": "Emulation.setEmulatedMedia",
            "params": {"features": [{"name": "prefers-color-scheme", "value": if dark { "dark" } else { "light" }}]}
        }));
        assert!(r.is_ok(), "cannot set the colour scheme: {r:?}");
    }

    /// axe-core on this page, in both schemes: no serious or critical
    /// violation; a screenshot of each.
    async fn check(&self, name: &str) {
        let sid = self.c.session_id().await.unwrap().expect("a session id");
        for dark in [false, true] {
            self.scheme(&sid, dark);
            let is_dark: Value = self
                .c
                .execute("return matchMedia('(prefers-color-scheme: dark)').matches", vec![])
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

fn key_for(home: &std::path::Path, user: &str, role: &str) -> String {
    let (ok, _, err) = run_aula(&["users", "add", user, "--role", role], home);
    assert!(ok, "{err}");
    let (ok, out, err) = run_aula(&["keys", "create", user], home);
    assert!(ok, "{err}");
    out.trim().to_string()
}

fn live_keys(home: &std::path::Path, user: &str) -> usize {
    let (ok, out, err) = run_aula(&["keys", "list", user], home);
    assert!(ok, "{err}");
    // The last column is the revocation date, `-` for a live key.
    out.lines()
        .skip(1)
        .filter(|l| l.split_whitespace().nth(1) == Some(user))
        .filter(|l| l.split_whitespace().last() == Some("-"))
        .count()
}

#[test]
fn teachers_and_students_use_the_page_in_a_real_browser() {
    let mock = spawn_mock(250);
    let g = TestGateway::new("web").config(&format!(
        "[[models]]\nname = \"mock\"\nurl = \"{}/v1\"\nparallel = 1\n\n\
         [[models]]\nname = \"smol\"\ngguf = \"{}\"\ncontext = 512\nparallel = 1\npreload = false\n\n\
         [[limits]]\ntokens_per_day = 100000\n",
        mock.url,
        model_path(SMOL_FILE).display()
    ));
    g.write_config();
    let student = key_for(&g.home, "sam", "student");
    let teacher = key_for(&g.home, "ada", "teacher");
    let admin = key_for(&g.home, "root", "admin");
    let s = g.start();
    let (_driver, driver) = chromedriver();
    let shots = repo().join("target/web-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let profile = g.home.join("chromium-profile");
    // Another origin on this machine, for the cross-site form.
    let attacker = g.home.join("attacker");
    std::fs::create_dir_all(&attacker).unwrap();
    std::fs::write(
        attacker.join("index.html"),
        format!(
            "<!doctype html><html lang=en><title>x</title><form id=f method=post action=\"{}/keys\"><input name=expires_days value=1></form><script>document.getElementById('f').submit()</script></html>",
            s.url
        ),
    )
    .unwrap();
    let attacker_port = free_port();
    let python = std::env::var("AULA_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let _attacker = Killed(
        Command::new(&python)
            .args(["-m", "http.server", &attacker_port.to_string(), "--bind", "127.0.0.1"])
            .current_dir(&attacker)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let attacker_url = format!("http://127.0.0.1:{attacker_port}/");
    wait_for("the other origin", Duration::from_secs(20), || {
        ureq::get(&attacker_url).call().is_ok()
    });

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = browser(&driver, &profile).await;
        let p = Page {
            c: &c,
            base: s.url.clone(),
            driver: driver.clone(),
            axe: axe_source(),
            shots: shots.clone(),
        };

        // Signed out: every page leads to the sign-in form, and back after.
        p.go("/usage").await;
        assert_eq!(p.path().await, "/signin");
        p.check("signin").await;
        p.fill("#token", "aula-not-a-key").await;
        p.click("form[action$='/signin'] button").await;
        p.until("a bad key is refused", |b| b.contains("not valid")).await;

        // A student: own page, own usage, no teacher pages (by URL either).
        p.fill("#token", &student).await;
        p.click("form[action$='/signin'] button").await;
        p.until_path("/usage").await;
        p.go("/").await;
        assert_eq!(p.h1().await, "My usage");
        let b = p.body().await;
        assert!(b.contains("Tokens per day") && b.contains("100\u{202f}000"), "{b}");
        assert!(!b.contains("ada") && !b.contains("root"), "{b}");
        p.check("student-home").await;
        for teacher_only in ["/users", "/events"] {
            p.go(teacher_only).await;
            let b = p.body().await;
            assert!(b.contains("Only teachers and admins"), "{teacher_only}: {b}");
        }
        let r = ureq::get(&format!("{}/events", s.url)).call();
        assert!(r.is_err(), "no live data without a session");

        // The playground streams an answer from the model, as the student.
        p.go("/playground").await;
        p.check("playground").await;
        p.fill("#prompt", "Say hello").await;
        p.click("#playground button[type=submit]").await;
        p.until("the answer streams in", |b| b.contains("Done in")).await;
        let answer = p
            .c
            .find(Locator::Css("#output"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(answer.contains("Hello"), "{answer}");
        let curl = p.c.find(Locator::Css("#curl")).await.unwrap().text().await.unwrap();
        assert!(curl.contains("Say hello") && curl.contains(&format!("{}/v1", s.url)), "{curl}");

        // Own usage, after the request; only the student's own rows, by model.
        p.go("/usage?by=user").await;
        let b = p.body().await;
        assert!(b.contains("mock") && b.contains("your own requests"), "{b}");
        assert!(!b.contains("ada"), "{b}");
        p.check("student-usage").await;

        // A key made on the page works once and not after it is revoked.
        p.go("/keys").await;
        p.click("form[action$='/keys'] button").await;
        p.until_css("the new key is shown", "input.secret").await;
        let secret = p
            .c
            .find(Locator::Css("input.secret"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .unwrap();
        assert!(secret.starts_with("aula-"), "{secret}");
        p.check("keys").await;
        let chat = chat_body("mock", "hi", 4);
        let url = format!("{}/v1/chat/completions", s.url);
        assert_eq!(post_auth(&url, Some(&secret), &chat).status, 200);
        assert_eq!(live_keys(&g.home, "sam"), 2);
        // The newest key's Revoke button is the last in the table.
        let buttons = p.c.find_all(Locator::Css("form[action$='/revoke'] button")).await.unwrap();
        buttons.last().unwrap().click().await.unwrap();
        p.until("the key is revoked", |b| b.contains("revoked")).await;
        wait_for("the revoked key is refused", Duration::from_secs(5), || {
            post_auth(&url, Some(&secret), &chat).status == 401
        });
        assert_eq!(live_keys(&g.home, "sam"), 1);

        // A form on another site cannot act for the student.
        p.c.goto(&attacker_url).await.unwrap();
        p.until("the cross-site post is refused", |b| b.contains("not sent from this site")).await;
        assert_eq!(live_keys(&g.home, "sam"), 1, "no key was made");

        // Signing out ends the session.
        p.go("/").await;
        p.click("form[action$='/signout'] button").await;
        p.until_path("/signin").await;
        p.go("/keys").await;
        p.until_path("/signin").await;

        // A teacher: the box, the users, everyone's usage, the live queue.
        p.sign_in(&teacher).await;
        p.until_path("/").await;
        assert_eq!(p.h1().await, "The box");
        let b = p.body().await;
        assert!(b.contains("mock") && b.contains("smol"), "{b}");
        assert!(!b.contains("Unload"), "load/unload is for admins: {b}");
        p.check("teacher-home").await;
        p.go("/users").await;
        let b = p.body().await;
        assert!(b.contains("sam") && b.contains("root"), "{b}");
        p.check("users").await;
        p.go("/usage?by=user&period=day").await;
        assert!(p.body().await.contains("sam"));
        p.check("teacher-usage").await;
        p.go("/usage?by=user&period=day&format=csv").await;
        // (a download: the browser stays; fetch it directly instead)
        p.go("/").await;
        let bench = Command::new(aula_exe())
            .args([
                "bench", "--url", &s.url, "--model", "mock", "--users", "6",
                "--concurrency", "6", "--requests", "12", "--max-tokens", "4",
                "--api-key", &teacher,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let _bench = Killed(bench);
        let mut peak = 0u64;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && peak < 3 {
            let t = p
                .c
                .find(Locator::Css("[data-live='queued']"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            peak = peak.max(t.trim().parse().unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(peak >= 3, "the live queue did not rise under load (peak {peak})");
        let summary = p
            .c
            .find(Locator::Css("[data-summary='load']"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(summary.starts_with("Now "), "{summary}");
        p.click("form[action$='/signout'] button").await;
        p.until_path("/signin").await;

        // An admin loads a model from the page, and unloads it.
        p.sign_in(&admin).await;
        p.until_path("/").await;
        p.click("form[action$='/models/smol/load'] button").await;
        p.until_css("smol is loaded", "form[action$='/models/smol/unload']").await;
        let row = p.c.find(Locator::XPath("//tr[th[contains(., 'smol')]]")).await.unwrap();
        assert!(row.text().await.unwrap().contains("ready"));
        p.check("admin-home").await;
        p.click("form[action$='/models/smol/unload'] button").await;
        p.until_css("smol is unloaded", "form[action$='/models/smol/load']").await;
        c.close().await.unwrap();
    });
    // The download, as a teacher's session would get it.
    let csv = agent_csv(&s.url, &teacher);
    assert!(csv.starts_with("user,requests,ok"), "{csv}");
    assert!(csv.contains("\nsam,"), "{csv}");
}

/// Sign in with plain HTTP (no browser) and fetch the usage CSV.
fn agent_csv(base: &str, key: &str) -> String {
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let r = agent.get(&format!("{base}/signin")).call().unwrap();
    let cookie = r.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
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
    let cookie = r.header("set-cookie").unwrap().split(';').next().unwrap().to_string();
    agent
        .get(&format!("{base}/usage?by=user&period=day&format=csv"))
        .set("Cookie", &cookie)
        .call()
        .unwrap()
        .into_string()
        .unwrap()
}
