//! A class sharing one box: API keys, trusted front ends, token-fair
//! queueing, quotas, the usage ledger (including after SIGKILL), metrics.
//! The engine is the `openai-mock` stand-in, paced like a real one, so these
//! tests are about the gateway, not the model.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;
use common::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn body() -> Value {
    json!({"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
}

fn config(home: &Path, mock: &Proc, parallel: usize, extra: &str) {
    std::fs::write(
        home.join("aula.toml"),
        format!(
            "[[models]]\nname = \"mock\"\nurl = \"{}\"\nparallel = {parallel}\n\n{extra}",
            mock.url
        ),
    )
    .unwrap();
}

fn usage_json(home: &Path, by: &str) -> Vec<Value> {
    let (ok, out, err) = run_aula(&["usage", "--by", by, "--json"], home);
    assert!(ok, "{err}");
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn row<'a>(rows: &'a [Value], key: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["key"] == key)
        .unwrap_or_else(|| panic!("no usage row for {key}: {rows:?}"))
}

#[test]
fn keys_guard_every_route_and_never_leak() {
    let mock = spawn_mock(0);
    let home = temp_home("keys");
    config(&home, &mock, 4, "");
    let key = add_user(&home, "ada", &["--role", "teacher", "--group", "cs101"]);
    assert!(key.starts_with("aula-"));
    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    wait_for("the start-up banner", Duration::from_secs(60), || {
        s.output().contains("authentication: on")
    });
    let url = format!("{}/v1/chat/completions", s.url);

    let none = post_auth(&url, None, &body());
    let wrong = post_auth(
        &url,
        Some("aula-wrongwrongwrongwrongwrongwrongwrongwron"),
        &body(),
    );
    let hubless = post_auth(&url, Some("some-other-token"), &body());
    for r in [&none, &wrong, &hubless] {
        assert_eq!(r.status, 401, "{}", r.text);
        // The same answer whatever was wrong, and never the token itself.
        assert_eq!(r.body, none.body);
        assert!(!r.text.contains("wrongwrong") && !r.text.contains("some-other-token"));
    }
    assert_eq!(get_auth(&format!("{}/v1/models", s.url), None).status, 401);
    let models = get_auth(&format!("{}/v1/models", s.url), Some(&key));
    assert_eq!(models.body["data"][0]["id"], "mock", "{}", models.text);
    // Readiness for anyone, the per-model detail for staff only.
    let ready = get(&format!("{}/readyz", s.url));
    assert!(ready.body["ready"].is_boolean(), "{}", ready.text);
    assert!(ready.body.get("models").is_none(), "{}", ready.text);
    let ready = get_auth(&format!("{}/readyz", s.url), Some(&key));
    assert!(ready.body["models"]["mock"].is_object(), "{}", ready.text);
    let ok = post_auth(&url, Some(&key), &body());
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.body["usage"]["completion_tokens"], 4);

    // An expiring key works, then stops working.
    // 0.0002 days: about 17 s, time enough for the first request on a
    // busy machine; then it is refused (an event waited for, not a delay).
    let (_, short, _) = run_aula(&["keys", "create", "ada", "--expires", "0.0002"], &home);
    let short = short.trim().to_string();
    assert_eq!(post_auth(&url, Some(&short), &body()).status, 200);
    wait_for("the short key to expire", Duration::from_secs(120), || {
        post_auth(&url, Some(&short), &body()).status == 401
    });

    // Revoking takes effect on the running gateway within a second or so.
    let (ok_revoke, _, err) = run_aula(&["keys", "revoke", "ada"], &home);
    assert!(ok_revoke, "{err}");
    wait_for(
        "the revoked key to be refused",
        Duration::from_secs(60),
        || post_auth(&url, Some(&key), &body()).status == 401,
    );

    // Nothing secret in the gateway's output, the listing or the database.
    let (_, list, _) = run_aula(&["keys", "list"], &home);
    for text in [
        s.output(),
        list,
        std::fs::read_to_string(home.join("aula.db")).unwrap_or_default(),
    ] {
        assert!(!text.contains(&key) && !text.contains(&short));
    }
    let rows = usage_json(&home, "user");
    assert!(row(&rows, "ada")["ok"].as_i64().unwrap() >= 2, "{rows:?}");
    let groups = usage_json(&home, "group");
    assert!(row(&groups, "cs101")["requests"].as_i64().unwrap() >= 2);
    drop(s);
}

#[test]
fn open_only_on_loopback_and_trusted_front_ends() {
    let mock = spawn_mock(0);
    let home = temp_home("open");
    config(&home, &mock, 4, "[auth]\ntrusted = [\"webui\"]\n");
    // No users: loopback serves anonymously; any other address refuses to start.
    let (ok, _, err) = run_aula(&["serve", "--host", "0.0.0.0", "--port", "0"], &home);
    assert!(
        !ok && err.contains("refusing") && err.contains("--insecure-no-auth"),
        "{err}"
    );
    {
        let s = spawn_aula(
            &[
                "serve",
                "--host",
                "0.0.0.0",
                "--port",
                "0",
                "--insecure-no-auth",
            ],
            Some(&home),
        );
        let port = s.url.rsplit(':').next().unwrap().to_string();
        let r = post_auth(
            &format!("http://127.0.0.1:{port}/v1/chat/completions"),
            None,
            &body(),
        );
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let webui = add_user(&home, "webui", &["--group", "chat"]);
    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    let url = format!("{}/v1/chat/completions", s.url);
    let r = post_headers(
        &url,
        &[
            ("Authorization", &format!("Bearer {webui}")),
            ("X-OpenWebUI-User-Email", "bob@uni.edu"),
        ],
        &body(),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    // The header alone, without the front end's key, is nothing.
    let r = post_headers(&url, &[("X-OpenWebUI-User-Email", "bob@uni.edu")], &body());
    assert_eq!(r.status, 401);
    // An unverified front end's users are its own: `webui/bob@uni.edu`.
    let rows = usage_json(&home, "user");
    assert_eq!(row(&rows, "webui/bob@uni.edu")["ok"], 1, "{rows:?}");
    assert_eq!(row(&usage_json(&home, "group"), "chat")["ok"], 1);
    assert_eq!(row(&rows, "anonymous")["ok"], 1);
    drop(s);
}

#[test]
fn fair_queue_keeps_engine_slots_and_lets_a_light_user_through() {
    // 4 tokens x 100 ms: each request holds a slot for about 400 ms, long
    // beside the gateway's own work even on a busy machine.
    let mock = spawn_mock(100);
    let home = temp_home("fair");
    config(&home, &mock, 2, "");
    let heavy = add_user(&home, "heavy", &[]);
    let light = add_user(&home, "light", &[]);
    let prof = add_user(&home, "prof", &["--role", "teacher"]);
    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    let url = format!("{}/v1/chat/completions", s.url);
    assert_eq!(post_auth(&url, Some(&light), &body()).status, 200);

    let start = Instant::now();
    let done = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (url, key, done) = (url.clone(), heavy.clone(), done.clone());
            std::thread::spawn(move || {
                let r = post_auth(&url, Some(&key), &body());
                done.lock().unwrap().push((r.status, start.elapsed()));
            })
        })
        .collect();
    // The backlog is there (both slots busy, the rest queued) before the
    // light user asks: events, not a delay.
    let queued = |n: usize| {
        let m = get_auth(&format!("{}/metrics", s.url), Some(&prof)).text;
        m.lines()
            .find(|l| l.starts_with("aula_queue_depth{model=\"mock\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|q| q >= n as f64)
    };
    wait_for("8 heavy requests queued", Duration::from_secs(60), || {
        queued(8)
    });
    let heavy_before = done.lock().unwrap().len();
    let r = post_auth(&url, Some(&light), &body());
    let heavy_during = done.lock().unwrap().len() - heavy_before;
    assert_eq!(r.status, 200, "{}", r.text);
    for t in threads {
        t.join().unwrap();
    }
    let done = done.lock().unwrap();
    let last = done.iter().map(|d| d.1).max().unwrap();
    assert!(done.iter().all(|d| d.0 == 200));
    // First come, first served, the light request would wait for the whole
    // backlog (8 or more heavy requests finishing while it waits); fair, it
    // takes the next free slot: one heavy request frees it, and the other
    // slot finishes at most two more while the light one runs.
    assert!(
        heavy_during <= 4,
        "{heavy_during} heavy requests finished while the light one waited and ran"
    );
    // Work-conserving: 17 requests on 2 slots take about 3.4 s; generous
    // room for a busy machine, far below what an idle slot would cost.
    assert!(last >= Duration::from_millis(3200), "{last:?}");
    assert!(last < Duration::from_secs(12), "{last:?}");
    let stats = get(&format!("{}/stats", mock.url));
    assert_eq!(
        stats.body["max_in_flight"], 2,
        "the engine got more than its slots: {}",
        stats.text
    );
    // Metrics are for staff: a student gets 403, no key 401, a teacher the text.
    assert_eq!(
        get_auth(&format!("{}/metrics", s.url), Some(&light)).status,
        403
    );
    assert_eq!(get(&format!("{}/metrics", s.url)).status, 401);
    let metrics = get_auth(&format!("{}/metrics", s.url), Some(&prof)).text;
    assert!(
        metrics.contains("aula_queue_wait_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("aula_requests_total{model=\"mock\",status=\"200\"} 18"),
        "{metrics}"
    );
    drop(s);
}

#[test]
fn quota_holds_under_200_concurrent_requests_and_changes_at_run_time() {
    let mock = spawn_mock(2);
    let home = temp_home("quota");
    let budget = 500;
    config(
        &home,
        &mock,
        8,
        &format!("[[limits]]\nrole = \"student\"\ntokens_per_day = {budget}\n"),
    );
    let key = add_user(&home, "sam", &[]);
    let admin = add_user(&home, "root", &["--role", "admin"]);
    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    let url = format!("{}/v1/chat/completions", s.url);
    let barrier = Arc::new(std::sync::Barrier::new(200));
    let codes: Vec<u16> = (0..200)
        .map(|_| {
            let (url, key, barrier) = (url.clone(), key.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                post_auth(&url, Some(&key), &body()).status
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let ok = codes.iter().filter(|c| **c == 200).count();
    let refused = codes.iter().filter(|c| **c == 403).count();
    assert_eq!(ok + refused, 200, "{codes:?}");
    // Reservations held back requests that, settled, would have fitted: the
    // rest of the budget is still there, then it is gone.
    let mut r = post_auth(&url, Some(&key), &body());
    for _ in 0..50 {
        if r.status != 200 {
            break;
        }
        r = post_auth(&url, Some(&key), &body());
    }
    assert_eq!(r.status, 403);
    assert_eq!(r.body["error"]["code"], "quota_tokens_day", "{}", r.text);
    assert!(r.body["error"]["resets_at"].as_i64().unwrap() > 0);
    let rows = usage_json(&home, "user");
    let used = row(&rows, "sam")["prompt_tokens"].as_i64().unwrap()
        + row(&rows, "sam")["completion_tokens"].as_i64().unwrap();
    // One reservation: a bound on the prompt ("hi": 2 bytes + 16) + max_tokens 4.
    let reservation = 2 + 16 + 4;
    assert!(used <= budget + reservation, "used {used} of {budget}");
    assert!(ok >= 1 && refused >= 1, "ok {ok}, refused {refused}");
    assert!(
        used > budget - reservation,
        "the budget was not used up: {used}"
    );
    let metrics = get_auth(&format!("{}/metrics", s.url), Some(&admin)).text;
    assert!(
        metrics.contains("aula_limit_refusals_total{kind=\"quota_tokens_day\"}"),
        "{metrics}"
    );

    // Run-time change: a bigger budget, but the model is no longer allowed.
    config(
        &home,
        &mock,
        8,
        "[[limits]]\nrole = \"student\"\ntokens_per_day = 100000\nmodels = []\n",
    );
    unsafe {
        libc::kill(s.pid() as i32, libc::SIGHUP);
    }
    wait_for("the new limits", Duration::from_secs(60), || {
        post_auth(&url, Some(&key), &body()).body["error"]["code"] == "model_not_allowed"
    });
    drop(s);
}

#[test]
fn sigkill_under_load_loses_no_finished_request() {
    // Answers of ~200 ms, so that most requests in flight at the kill were
    // admitted long enough before it to have their first row written.
    let mock = spawn_mock(50);
    let home = temp_home("kill");
    config(&home, &mock, 4, "");
    let key = add_user(&home, "kim", &[]);
    let mut s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    let url = format!("{}/v1/chat/completions", s.url);
    let completed = Arc::new(Mutex::new(0usize));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (url, key, completed, stop) =
                (url.clone(), key.clone(), completed.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let mut b = body();
                    b["stream"] = json!(true);
                    // Transport errors after the kill end the loop.
                    let Ok(resp) = ureq::post(&url)
                        .set("Authorization", &format!("Bearer {key}"))
                        .send_string(&b.to_string())
                    else {
                        return;
                    };
                    let text = resp.into_string().unwrap_or_default();
                    if text.contains("data: [DONE]") {
                        *completed.lock().unwrap() += 1;
                    }
                }
            })
        })
        .collect();
    // Killed once the load has run (8 answers finished, requests still
    // streaming), however long a busy machine takes to get there.
    wait_for("8 answers to finish", Duration::from_secs(120), || {
        *completed.lock().unwrap() >= 8
    });
    // And once a request in flight has its first row in the database (first
    // rows are written within 50 ms of admission, not at once).
    wait_for(
        "a request in flight to be recorded",
        Duration::from_secs(120),
        || {
            let rows = usage_json(&home, "user");
            rows.iter().any(|r| r["unfinished"].as_i64() >= Some(1))
        },
    );
    unsafe {
        libc::kill(s.pid() as i32, libc::SIGKILL);
    }
    let _ = s.child.wait();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    let completed = *completed.lock().unwrap() as i64;
    let rows = usage_json(&home, "user");
    let r = row(&rows, "kim");
    assert!(completed >= 8, "load did not run: {completed}");
    // Every answer a client finished is in the ledger, finalized; the ones
    // in flight at the kill are there, marked unfinished.
    assert!(
        r["ok"].as_i64().unwrap() >= completed,
        "{r} vs {completed} completed"
    );
    assert!(r["unfinished"].as_i64().unwrap() >= 1, "{r}");
    assert_eq!(
        r["requests"].as_i64().unwrap(),
        r["ok"].as_i64().unwrap()
            + r["unfinished"].as_i64().unwrap()
            + r["cancelled"].as_i64().unwrap()
            + r["errors"].as_i64().unwrap()
    );
    // And a new gateway starts on the same database.
    let s2 = spawn_aula(&["serve", "--port", "0"], Some(&home));
    assert_eq!(
        post_auth(
            &format!("{}/v1/chat/completions", s2.url),
            Some(&key),
            &body()
        )
        .status,
        200
    );
    drop(s2);
}

#[test]
fn a_locked_database_loses_nothing_and_a_full_disk_refuses_cleanly() {
    let mock = spawn_mock(0);
    let home = temp_home("locked");
    config(&home, &mock, 4, "");
    let key = add_user(&home, "lee", &[]);
    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    let url = format!("{}/v1/chat/completions", s.url);
    assert_eq!(post_auth(&url, Some(&key), &body()).status, 200);
    let db = home.join("aula.db");
    let served = || {
        get(&format!("{}/stats", mock.url)).body["served"]
            .as_u64()
            .unwrap()
    };
    // The database locked by another process until the test removes `hold`
    // (not for a fixed time that a busy machine might outlast).
    let hold = home.join("hold");
    std::fs::write(&hold, "").unwrap();
    let (mut locker, line) = python_child(&[
        "-c",
        "import os, sqlite3, sys, time\nc = sqlite3.connect(sys.argv[1], isolation_level=None)\nc.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\nwhile os.path.exists(sys.argv[2]): time.sleep(0.05)\n",
        db.to_str().unwrap(),
        hold.to_str().unwrap(),
    ]);
    assert_eq!(line, "locked");
    // A locked database holds up nothing: each answer's row is in the
    // ledger's journal before the answer ends, streamed or whole.
    let mut b = body();
    b["stream"] = json!(true);
    let r = post_auth(&url, Some(&key), &b);
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("[DONE]"), "{}", r.text);
    assert_eq!(post_auth(&url, Some(&key), &body()).status, 200);
    let journal: usize = std::fs::read_dir(&home)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("aula.db-ledger-")
        })
        .map(|e| std::fs::read_to_string(e.path()).unwrap().lines().count())
        .sum();
    assert!(
        journal >= 2,
        "the two answers' rows wait in the journal: {journal}"
    );
    std::fs::remove_file(&hold).unwrap();
    locker.0.wait().unwrap();
    assert_eq!(row(&usage_json(&home, "user"), "lee")["requests"], 3);
    // A full disk (a file-size limit of one byte on the gateway): the answer
    // whose row cannot be written is withheld (503), and the next request is
    // refused before it runs.
    let fsize = |limit: &str| {
        let pid = s.pid().to_string();
        let out = std::process::Command::new("prlimit")
            .args(["--pid", pid.as_str(), &format!("--fsize={limit}:")])
            .output()
            .expect("prlimit (util-linux)");
        assert!(out.status.success(), "{out:?}");
    };
    fsize("1");
    let r = post_auth(&url, Some(&key), &body());
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.text.contains("could not be recorded"), "{}", r.text);
    let served_before = served();
    let r = post_auth(&url, Some(&key), &body());
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(r.text.contains("was not run"), "{}", r.text);
    assert_eq!(
        served(),
        served_before,
        "a request the ledger could not record must not run"
    );
    // Room again: served; the withheld answer's row, kept in memory, reaches
    // the database when the writer next tries (as an error: its client got
    // a 503); the refused request has none.
    fsize("unlimited");
    assert_eq!(post_auth(&url, Some(&key), &body()).status, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let rows = usage_json(&home, "user");
        let lee = row(&rows, "lee");
        if lee["requests"] == 5 {
            assert_eq!(
                (&lee["ok"], &lee["errors"]),
                (&json!(4), &json!(1)),
                "{rows:?}"
            );
            break;
        }
        assert_eq!(lee["requests"], 4, "{rows:?}");
        assert!(std::time::Instant::now() < deadline, "{rows:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(s);
}

#[test]
fn an_engine_dying_mid_stream_ends_the_stream_with_an_error_event() {
    // The mock sends one token and then holds the stream open: the engine is
    // killed only once that token has reached the client (an event, not a
    // delay), so it always dies mid-stream, however busy the machine.
    let mut mock = spawn_exe(
        &mock_exe(),
        &["0", "--token-ms", "1", "--stall-after-tokens", "1"],
        None,
    );
    let home = temp_home("midstream");
    config(&home, &mock, 4, "");
    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    let url = format!("{}/v1/chat/completions", s.url);
    let mut b = body();
    b["stream"] = json!(true);
    let resp = ureq::post(&url)
        .send_string(&b.to_string())
        .expect("the stream starts");
    let mut reader = BufReader::new(resp.into_reader());
    let mut text = String::new();
    let mut line = String::new();
    while !text.contains("\"delta\":{\"content\":\"Hello\"}") {
        line.clear();
        let n = reader.read_line(&mut line).unwrap_or(0);
        assert!(n > 0, "the stream ended before any text: {text}");
        text.push_str(&line);
    }
    let _ = mock.child.kill();
    let _ = mock.child.wait();
    let mut rest = String::new();
    let _ = reader.read_to_string(&mut rest);
    text.push_str(&rest);
    assert!(
        text.contains("\"code\":\"bad_gateway\"") && text.contains("incomplete"),
        "{text}"
    );
    assert!(!text.contains("[DONE]"), "{text}");
    let rows = usage_json(&home, "model");
    assert_eq!(row(&rows, "mock")["errors"], 1, "{rows:?}");
    drop(s);
}

#[test]
fn a_slow_jupyterhub_gets_a_clear_503_never_an_accept() {
    let mock = spawn_mock(0);
    // A Hub that takes 10 s to answer anything.
    let (_hub, hub_url) = counting_hub(10_000);
    let home = temp_home("slowhub");
    config(
        &home,
        &mock,
        4,
        &format!("[jupyterhub]\nurl = \"{hub_url}\"\napi_token = \"svc\"\ntimeout_seconds = 1\n"),
    );
    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    let t = Instant::now();
    let r = post_auth(
        &format!("{}/v1/chat/completions", s.url),
        Some("a-notebook-token"),
        &body(),
    );
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(
        r.text.contains("JupyterHub") && !r.text.contains("a-notebook-token"),
        "{}",
        r.text
    );
    // Well under the Hub's 10 s: the 1 s timeout answered, not the Hub.
    assert!(t.elapsed() < Duration::from_secs(9), "{:?}", t.elapsed());
    assert_eq!(get(&format!("{}/stats", mock.url)).body["served"], 0);
    drop(s);
}

/// An HS256 JWT, made with Python's standard library.
fn jwt(secret: &str, claims: &Value) -> String {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import base64, hashlib, hmac, json, sys\n\
             b = lambda d: base64.urlsafe_b64encode(d).rstrip(b'=')\n\
             h = b(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())\n\
             p = b(sys.argv[2].encode())\n\
             s = b(hmac.new(sys.argv[1].encode(), h + b'.' + p, hashlib.sha256).digest())\n\
             print((h + b'.' + p + b'.' + s).decode())",
            secret,
            &claims.to_string(),
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn trusted_front_ends_may_send_signed_user_tokens() {
    let mock = spawn_mock(0);
    let home = temp_home("jwt");
    config(
        &home,
        &mock,
        4,
        // A portal with single sign-on: its users are Aula's (verified).
        "[auth]\ntrusted = [\"portal\"]\nverified = [\"portal\"]\njwt_secret = \"front-end-secret\"\n",
    );
    let portal = add_user(&home, "portal", &["--group", "web"]);
    let outsider = add_user(&home, "eve", &[]);
    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    let url = format!("{}/v1/chat/completions", s.url);
    let exp = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600) as i64;
    let good = jwt(
        "front-end-secret",
        &json!({"sub": "carol", "groups": ["cs101"], "exp": exp}),
    );
    let send = |key: &str, token: &str| {
        post_headers(
            &url,
            &[
                ("Authorization", &format!("Bearer {key}")),
                ("X-Aula-User-Token", token),
            ],
            &body(),
        )
    };
    assert_eq!(send(&portal, &good).status, 200);
    // Expired, wrongly signed, or sent with a key that is not trusted: refused.
    let expired = jwt(
        "front-end-secret",
        &json!({"sub": "carol", "exp": exp - 3600}),
    );
    let forged = jwt("guess", &json!({"sub": "carol", "exp": exp}));
    assert_eq!(send(&portal, &expired).status, 401);
    assert_eq!(send(&portal, &forged).status, 401);
    assert_eq!(send(&portal, "not.a.jwt").status, 401);
    let r = send(&outsider, &good);
    assert_eq!(r.status, 200, "an untrusted key is itself, not carol");
    let rows = usage_json(&home, "user");
    assert_eq!(row(&rows, "carol")["ok"], 1, "{rows:?}");
    assert_eq!(row(&rows, "eve")["ok"], 1);
    assert_eq!(row(&usage_json(&home, "group"), "cs101")["ok"], 1);
    drop(s);
}

#[test]
fn queues_are_bounded_and_a_client_that_leaves_is_dropped() {
    // One slot, each request holding it ~2 s (so all six arrive while the
    // first holds it, however busy the machine); at most 2 waiting per user.
    let mock = spawn_mock(500);
    let home = temp_home("bounds");
    config(&home, &mock, 1, "[fairness]\nmax_queued_per_user = 2\n");
    let key = add_user(&home, "pat", &[]);
    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    let url = format!("{}/v1/chat/completions", s.url);
    let barrier = Arc::new(std::sync::Barrier::new(6));
    let results: Vec<(u16, Option<String>)> = (0..6)
        .map(|_| {
            let (url, key, barrier) = (url.clone(), key.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let r = ureq::post(&url)
                    .set("Authorization", &format!("Bearer {key}"))
                    .send_string(&body().to_string());
                match r {
                    Ok(r) => (r.status(), None),
                    Err(ureq::Error::Status(code, r)) => {
                        (code, r.header("retry-after").map(String::from))
                    }
                    Err(e) => panic!("{e}"),
                }
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let limited: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert_eq!((ok, limited.len()), (3, 3), "{results:?}");
    assert!(
        limited.iter().all(|r| r.1.is_some()),
        "429 carries Retry-After: {results:?}"
    );

    // A client that gives up while queued: its request never reaches the engine.
    let before = get(&format!("{}/stats", mock.url)).body["served"]
        .as_u64()
        .unwrap();
    let holder = {
        let (url, key) = (url.clone(), key.clone());
        std::thread::spawn(move || post_auth(&url, Some(&key), &body()).status)
    };
    wait_for(
        "the holder to reach the engine",
        Duration::from_secs(60),
        || get(&format!("{}/stats", mock.url)).body["in_flight"] == 1,
    );
    let impatient = ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(300))
        .build();
    let gave_up = impatient
        .post(&url)
        .set("Authorization", &format!("Bearer {key}"))
        .send_string(&body().to_string());
    assert!(
        gave_up.is_err(),
        "the request should have timed out while queued"
    );
    assert_eq!(holder.join().unwrap(), 200);
    // A probe after it: had the impatient request stayed queued, it would
    // have run before the probe (one slot, one user, first come first).
    assert_eq!(post_auth(&url, Some(&key), &body()).status, 200);
    let after = get(&format!("{}/stats", mock.url)).body["served"]
        .as_u64()
        .unwrap();
    assert_eq!(
        after - before,
        2,
        "only the holder and the probe were run, not the request that left"
    );
    drop(s);
}

/// `aula backup` while a gateway serves, then `aula restore`: the copy holds
/// every key, every answered request and the uploads; restore refuses while
/// a gateway serves the data directory, keeps what it replaces, and the
/// restored box knows the old keys and files, not the newer ones.
#[test]
fn a_backup_taken_while_serving_restores_keys_ledger_and_files() {
    let mock = spawn_mock(0);
    let home = temp_home("backup");
    config(&home, &mock, 4, "");
    let kim = add_user(&home, "kim", &[]);
    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    let chat = format!("{}/v1/chat/completions", s.url);
    for _ in 0..3 {
        assert_eq!(post_auth(&chat, Some(&kim), &body()).status, 200);
    }
    let file = upload(&s.url, &kim, "notes.md", b"# Week 1\n", "assistants");
    let dir = home.join("backup-1");
    let dir_s = dir.to_str().unwrap();
    // Taken while the gateway serves: its answered requests are in the copy.
    let (ok, out, err) = run_aula(&["backup", dir_s], &home);
    assert!(ok, "{err}");
    assert!(
        out.contains("1 users, 1 keys, 3 requests in the ledger, 1 files"),
        "{out}"
    );
    assert!(
        dir.join("aula.toml").is_file() && dir.join("files").is_dir(),
        "{out}"
    );
    // A backup never goes over another, nor inside what it copies.
    let (ok, _, err) = run_aula(&["backup", dir_s], &home);
    assert!(!ok && err.contains("not empty"), "{err}");
    let inner = home.join("files").join("backup-2");
    let (ok, _, err) = run_aula(&["backup", inner.to_str().unwrap()], &home);
    assert!(!ok && err.contains("which the backup copies"), "{err}");
    assert!(!inner.exists());
    // Not while a gateway serves this data directory.
    let (ok, _, err) = run_aula(&["restore", dir_s], &home);
    assert!(!ok && err.contains("stop it first"), "{err}");
    // Changes after the backup: a new user, kim's file deleted.
    let lee = add_user(&home, "lee", &[]);
    let del = ureq::delete(&format!("{}/v1/files/{file}", s.url))
        .set("Authorization", &format!("Bearer {kim}"))
        .call()
        .unwrap();
    assert_eq!(del.status(), 200);
    drop(s);
    let (ok, out, err) = run_aula(&["restore", dir_s], &home);
    assert!(ok, "{err}");
    assert!(out.contains("is in "), "what was replaced is kept: {out}");
    let aside: Vec<_> = std::fs::read_dir(&*home)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("before-restore-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "{out}");
    assert!(aside[0].path().join("aula.db").is_file(), "{out}");
    // The restored box: kim's key and file, the ledger's three requests;
    // lee (added after the backup) is unknown.
    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    let chat = format!("{}/v1/chat/completions", s.url);
    assert_eq!(post_auth(&chat, Some(&kim), &body()).status, 200);
    assert_eq!(post_auth(&chat, Some(&lee), &body()).status, 401);
    let got = get_auth(&format!("{}/v1/files/{file}/content", s.url), Some(&kim));
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.text, "# Week 1\n");
    drop(s);
    let rows = usage_json(&home, "user");
    assert_eq!(row(&rows, "kim")["ok"].as_i64(), Some(4), "{rows:?}");
}
