//! The web page in a real browser: Debian's Chromium driven through
//! chromedriver (WebDriver, with `fantoccini`), against a real `aula serve`
//! with the mock engine and the built-in SmolLM2 (loaded from the page).
//! axe-core (installed by scripts/test.sh from npm) checks every page in the
//! light and the dark scheme; screenshots go to `target/web-screenshots/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::browser::{Page, browser, chromedriver};
use common::hub::{AULA_SERVICE_TOKEN, Hub};
use common::*;
use fantoccini::Locator;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn key_for(home: &std::path::Path, user: &str, role: &str) -> String {
    add_user(home, user, &["--role", role])
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
         [[models]]\nname = \"minilm\"\ngguf = \"{}\"\n\n\
         [[limits]]\ntokens_per_day = 100000\n",
        mock.url,
        model_path(SMOL_FILE).display(),
        models_dir().join("all-minilm-l6-v2.gguf").display()
    ));
    g.write_config();
    let student = key_for(&g.home, "sam", "student");
    let teacher = key_for(&g.home, "ada", "teacher");
    let admin = key_for(&g.home, "root", "admin");
    let s = g.start();
    let (_driver, driver) = chromedriver();
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
            .args([
                "-m",
                "http.server",
                &attacker_port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
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
        let p = Page::new(&c, &s.url, &driver);

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
        assert!(b.contains("the rule for everyone"), "which rule sets the budget: {b}");
        p.check("student-home").await;
        for teacher_only in ["/users", "/events", "/plan", "/users/ada"] {
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

        // And from a real model: SmolLM2, loaded on demand by this request.
        p.click("#model option:nth-child(2)").await;
        assert_eq!(
            p.c.find(Locator::Css("#model")).await.unwrap().prop("value").await.unwrap().as_deref(),
            Some("smol")
        );
        p.fill("#prompt", "Name one colour.").await;
        p.click("#playground button[type=submit]").await;
        p.until("SmolLM2's answer streams in", |b| b.contains("Done in") && b.contains("first token after")).await;
        let real = p.c.find(Locator::Css("#output")).await.unwrap().text().await.unwrap();
        assert!(!real.trim().is_empty() && !real.starts_with("Error"), "{real}");

        // Course material: a store of the student's own, searched from the playground.
        let file = upload(&s.url, &student, "mascot.txt", b"The course mascot is a purple owl named Quill. It lives in the library.", "assistants");
        let r = post_auth(&format!("{}/v1/vector_stores", s.url), Some(&student), &serde_json::json!({"name": "Week 1 notes", "file_ids": [file]}));
        assert_eq!(r.status, 200, "{}", r.text);
        let store = r.body["id"].as_str().unwrap().to_string();
        wait_for("the store is ingested", Duration::from_secs(120), || {
            get_auth(&format!("{}/v1/vector_stores/{store}", s.url), Some(&student)).body["file_counts"]["completed"] == 1
        });
        p.go("/playground").await;
        p.click("#model option:nth-child(1)").await;
        p.click("label[for='store-1']").await;
        p.fill("#prompt", "What is the course mascot?").await;
        p.click("#playground button[type=submit]").await;
        let b = p.until("the answer from course material", |b| b.contains("Done in")).await;
        assert!(b.contains("Course material found in: mascot.txt"), "{b}");

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
        wait_for("the revoked key is refused", Duration::from_secs(60), || {
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
        p.click("a[href$='/users/sam']").await;
        let b = p.until("sam's page", |b| b.contains("which rule sets each")).await;
        assert!(b.contains("the rule for everyone") && b.contains("mock"), "{b}");
        p.check("user").await;
        // "Can I run it": the planner as a form.
        p.go("/plan").await;
        p.check("plan-form").await;
        p.go("/plan?model=llama-3.1-8b&hardware=gb10&engine=embedded&precision=q4_k_m&context=8192&users=16").await;
        let b = p.body().await;
        assert!(b.contains("it fits") && b.contains("Weights"), "{b}");
        p.check("plan").await;
        p.go("/plan?model=llama-3.1-70b&hardware=gb10&engine=vllm&precision=bf16&context=8192&users=16").await;
        assert!(p.body().await.contains("does not fit"), "{}", p.body().await);
        p.go("/plan?model=../../etc/passwd&context=8192").await;
        assert!(p.body().await.contains("Error"), "{}", p.body().await);
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
        // SmolLM2 is loaded (the student's playground request loaded it).
        p.until_css("smol is loaded", "form[action$='/models/smol/unload']").await;
        let row = p.c.find(Locator::XPath("//tr[th[contains(., 'smol')]]")).await.unwrap();
        assert!(row.text().await.unwrap().contains("ready"));
        p.check("admin-home").await;
        p.click("form[action$='/models/smol/unload'] button").await;
        p.until_css("smol is unloaded", "form[action$='/models/smol/load']").await;
        let row = p.c.find(Locator::XPath("//tr[th[contains(., 'smol')]]")).await.unwrap();
        assert!(row.text().await.unwrap().contains("unloaded"));
        p.click("form[action$='/models/smol/load'] button").await;
        p.until_css("smol is loaded again", "form[action$='/models/smol/unload']").await;
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
    let cookie = web_sign_in(base, key);
    agent
        .get(&format!("{base}/usage?by=user&period=day&format=csv"))
        .set("Cookie", &cookie)
        .call()
        .unwrap()
        .into_string()
        .unwrap()
}

/// JupyterHub users sign in by pasting a Hub token, or through the Hub
/// itself ("Sign in with JupyterHub": the Hub's OAuth, a real Hub login).
#[test]
fn jupyterhub_users_sign_in_with_a_token_and_with_the_hub() {
    let port = free_port();
    let public = format!("http://127.0.0.1:{port}");
    let hub = Hub::start_with(Some(&format!("{public}/oauth_callback")));
    hub.admin("POST", "/users/alice", serde_json::json!({}));
    hub.admin(
        "POST",
        "/groups/cs101",
        serde_json::json!({"users": ["alice"]}),
    );
    let token = hub.token("alice", &["access:services!service=aula"]);
    let mock = spawn_mock(0);
    let home = temp_home("web-hub");
    std::fs::write(
        home.join("aula.toml"),
        format!(
            "[[models]]\nname = \"mock\"\nurl = \"{}/v1\"\n\n\
             [jupyterhub]\nurl = \"{}\"\npublic_url = \"{}\"\napi_token = \"{AULA_SERVICE_TOKEN}\"\n\n\
             [web]\npublic_url = \"{public}\"\n",
            mock.url, hub.api, hub.public
        ),
    )
    .unwrap();
    let s = spawn_aula(&["serve", "--port", &port.to_string()], Some(&home));
    let (_driver, driver) = chromedriver();
    let profile = home.join("chromium-profile");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = browser(&driver, &profile).await;
        let p = Page::new(&c, &s.url, &driver);

        // A Hub token pasted into the form.
        p.sign_in(&token).await;
        p.until_path("/").await;
        assert_eq!(p.h1().await, "My usage");
        let b = p.body().await;
        assert!(b.contains("alice") && b.contains("cs101"), "{b}");
        p.go("/keys").await;
        assert!(p.body().await.contains("signed in with JupyterHub"));
        p.go("/").await;
        p.click("form[action$='/signout'] button").await;
        p.until_path("/signin").await;

        // The Hub's own sign-in: its login page, then back, signed in.
        p.click("a[href*='/signin/hub']").await;
        p.until_css("the Hub's login page", "input[name=username]")
            .await;
        p.fill("input[name=username]", "bob").await;
        p.fill("input[name=password]", "any").await;
        p.click("#login_submit").await;
        let b = p
            .until("back at Aula, signed in", |b| b.contains("Signed in as"))
            .await;
        assert!(b.contains("bob"), "{b}");
        assert_eq!(p.path().await, "/");
        p.check("signed-in-with-jupyterhub").await;
        // The session works like the key it stands for: the playground answers.
        p.go("/playground").await;
        p.click("#playground button[type=submit]").await;
        p.until("the answer streams in", |b| b.contains("Done in"))
            .await;
        c.close().await.unwrap();
    });
    let (ok, out, err) = run_aula(&["usage", "--by", "user", "--json"], &home);
    assert!(ok, "{err}");
    assert!(out.contains("\"bob\""), "{out}");
}

/// Behind a reverse proxy at `/aula/`: every link, form and the cookie carry
/// the prefix taken from `[web] public_url`.
#[test]
fn links_and_the_cookie_carry_the_public_base_path() {
    let mock = spawn_mock(0);
    let g = TestGateway::new("web-base")
        .url_model("mock", &mock.url)
        .config("[web]\npublic_url = \"https://aula.example.lan/aula/\"\n");
    g.write_config();
    let key = key_for(&g.home, "ada", "teacher");
    let s = g.start();
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let r = see_other(agent.get(&format!("{}/usage", s.url)).call());
    assert_eq!(r.header("location"), Some("/aula/signin?next=/aula/usage"));
    let cookie = r.header("set-cookie").unwrap().to_string();
    assert!(
        cookie.contains("Path=/aula/")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax")
            && cookie.contains("Secure"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let html = agent
        .get(&format!("{}/signin", s.url))
        .set("Cookie", &session)
        .call()
        .unwrap()
        .into_string()
        .unwrap()
        .replace("&#x2f;", "/");
    assert!(
        html.contains("action=\"/aula/signin\"") && html.contains("href=\"/aula/static/aula.css\""),
        "{html}"
    );
    assert!(
        !html.contains("href=\"/static") && !html.contains("action=\"/signin"),
        "{html}"
    );
    // The key still signs in, and lands under the prefix.
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let r = see_other(
        agent
            .post(&format!("{}/signin", s.url))
            .set("Cookie", &session)
            .send_form(&[("csrf", csrf), ("token", &key), ("next", "/aula/usage")]),
    );
    assert_eq!(r.header("location"), Some("/aula/usage"));
}

/// A 303 answer (however ureq reports it).
fn see_other(r: Result<ureq::Response, ureq::Error>) -> ureq::Response {
    let r = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(r.status(), 303);
    r
}

/// An open live view does not hold up shutdown: its stream ends when the
/// gateway starts shutting down (not after the 30 s grace for requests).
#[test]
fn an_open_live_view_does_not_delay_shutdown() {
    let mock = spawn_mock(0);
    let g = TestGateway::new("web-shutdown").url_model("mock", &mock.url);
    let s = g.start();
    let url = format!("{}/events", s.url);
    let (connected, is_connected) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let r = ureq::get(&url).call().unwrap();
        let mut text = String::new();
        for line in std::io::BufReader::new(r.into_reader()).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("event: history") {
                let _ = connected.send(());
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    // The live view is open (its first event arrived) before the signal.
    is_connected
        .recv_timeout(Duration::from_secs(60))
        .expect("the live view's first event");
    let t0 = Instant::now();
    unsafe {
        libc::kill(s.pid() as i32, libc::SIGTERM);
    }
    let mut s = s;
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    // Well under the 30 s that requests in flight are given.
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "shutdown took {:?}",
        t0.elapsed()
    );
    let events = reader.join().unwrap();
    assert!(events.contains("event: history"), "{events}");
}
