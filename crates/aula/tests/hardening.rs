//! The gateway against clients that misbehave on purpose: dripping headers,
//! dripping or oversized bodies, anonymous uploads. Raw sockets on loopback,
//! the `openai-mock` stand-in as the engine.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// (home, gateway, mock engine, key): bound in this order, the home goes last.
fn gateway_with_a_key(tag: &str) -> (TempHome, Proc, Proc, String) {
    let mock = spawn_mock(0);
    let g = TestGateway::new(tag).url_model("mock", &mock.url);
    let key = add_user(&g.home, "ada", &[]);
    let s = g.start();
    (g.home, s, mock, key)
}

fn addr(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// Read until the server closes the connection (or `limit` passes); the
/// bytes read and how long it took.
fn read_all(mut s: TcpStream, limit: Duration) -> (String, Duration) {
    let t = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    (String::from_utf8_lossy(&buf).into_owned(), t.elapsed())
}

/// A client that sends its headers a byte at a time, forever, is cut off
/// after the header timeout (10 s), not held open.
#[test]
fn dripping_headers_are_cut_off() {
    let (_home, s, _mock, _key) = gateway_with_a_key("drip-headers");
    let mut c = TcpStream::connect(addr(&s.url)).unwrap();
    let started = Instant::now();
    c.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(25) {
        std::thread::sleep(Duration::from_millis(500));
        if c.write_all(b"X-Slow: a\r\n").is_err() {
            closed = true;
            break;
        }
    }
    let elapsed = started.elapsed();
    assert!(closed, "the connection was still open after {elapsed:?}");
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
}

/// An anonymous client's body is never read: a request without a key that
/// announces 1.9 MB gets its 401 at once, before sending any of it.
#[test]
fn anonymous_bodies_are_not_read() {
    let (_home, s, _mock, _key) = gateway_with_a_key("anon-body");
    let mut c = TcpStream::connect(addr(&s.url)).unwrap();
    c.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 1900000\r\n\r\n{\"model\": ",
    )
    .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut buf = [0u8; 512];
    let t = Instant::now();
    let n = c.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    // At once, not after the 20 s body timeout.
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

/// With a key: a body over 2 MiB is a 413, and one that drips is a 408
/// after the body timeout (20 s).
#[test]
fn oversized_and_dripping_bodies_are_refused() {
    let (_home, s, _mock, key) = gateway_with_a_key("big-body");
    let big = format!(
        "{{\"model\": \"mock\", \"messages\": [{{\"role\": \"user\", \"content\": \"{}\"}}]}}",
        "a".repeat(2 << 20)
    );
    let mut c = TcpStream::connect(addr(&s.url)).unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        big.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    let _ = c.write_all(big.as_bytes());
    let (resp, _) = read_all(c, Duration::from_secs(10));
    assert!(
        resp.starts_with("HTTP/1.1 413"),
        "{}",
        &resp[..resp.len().min(300)]
    );
    assert!(resp.contains("payload_too_large"), "{resp}");

    let mut c = TcpStream::connect(addr(&s.url)).unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{{"
    );
    c.write_all(head.as_bytes()).unwrap();
    let writer = c.try_clone().unwrap();
    let dripping = std::thread::spawn(move || {
        let mut w = writer;
        for _ in 0..60 {
            std::thread::sleep(Duration::from_millis(500));
            if w.write_all(b" ").is_err() {
                break;
            }
        }
    });
    let (resp, took) = read_all(c, Duration::from_secs(40));
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    let _ = dripping.join();
    // And the gateway still serves.
    let ok = post_auth(
        &format!("{}/v1/chat/completions", s.url),
        Some(&key),
        &chat_body("mock", "hi", 2),
    );
    assert_eq!(ok.status, 200, "{}", ok.text);
}

/// Requests to a `url` engine (here the mock, which would accept anything)
/// get the same validation as Aula's own engine: `n` > 1, vendor extras,
/// token-id prompts are refused at the gateway and never forwarded.
#[test]
fn every_engine_kind_gets_the_same_validation() {
    let (_home, s, mock, key) = gateway_with_a_key("validate");
    let before = get(&format!("{}/stats", mock.url)).body;
    let chat = format!("{}/v1/chat/completions", s.url);
    let comp = format!("{}/v1/completions", s.url);
    for (url, body, param) in [
        (
            &chat,
            serde_json::json!({"model": "mock", "messages": [{"role": "user", "content": "hi"}], "n": 64}),
            "n",
        ),
        (
            &chat,
            serde_json::json!({"model": "mock", "messages": [{"role": "user", "content": "hi"}], "ignore_eos": true}),
            "ignore_eos",
        ),
        (
            &comp,
            serde_json::json!({"model": "mock", "prompt": [1, 2, 3]}),
            "prompt",
        ),
        (
            &comp,
            serde_json::json!({"model": "mock", "prompt": "hi", "best_of": 64}),
            "best_of",
        ),
    ] {
        let r = post_auth(url, Some(&key), &body);
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.body["error"]["param"], param, "{}", r.text);
    }
    let after = get(&format!("{}/stats", mock.url)).body;
    assert_eq!(before, after, "nothing reached the engine");
    let ok = post_auth(&chat, Some(&key), &chat_body("mock", "hi", 2));
    assert_eq!(ok.status, 200, "{}", ok.text);
}

/// Send `tokens` to `GET {url}/v1/models` all at once; their statuses.
fn all_at_once(url: &str, tokens: Vec<String>) -> Vec<u16> {
    let threads: Vec<_> = tokens
        .into_iter()
        .map(|t| {
            let u = format!("{url}/v1/models");
            std::thread::spawn(move || get_auth(&u, Some(&t)).status)
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// Hardening 9: JupyterHub is asked once per token however many requests
/// carry it at once, by a bounded number of requests at a time, and a flood
/// of made-up tokens does not push a working user out of the cache.
#[test]
fn jupyterhub_lookups_are_deduplicated_and_bounded() {
    let mock = spawn_mock(0);
    let (_hub, hub_url) = counting_hub(300);
    let home = temp_home("hubflood");
    std::fs::write(
        home.join("aula.toml"),
        format!(
            "[[models]]\nname = \"mock\"\nurl = \"{}\"\n\n[jupyterhub]\nurl = \"{hub_url}\"\napi_token = \"svc\"\ntimeout_seconds = 30\n",
            mock.url
        ),
    )
    .unwrap();
    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));

    // 40 requests with one token the gateway has not seen: one Hub question.
    let statuses = all_at_once(&s.url, vec!["good-ada".to_string(); 40]);
    assert!(statuses.iter().all(|&c| c == 200), "{statuses:?}");
    let stats = get(&format!("{hub_url}/stats")).body;
    assert_eq!(stats["asked"]["good-ada"], 1, "{stats}");

    // 120 made-up tokens at once: all refused, the Hub never asked more than
    // the bound at a time; the same tokens again are answered from the cache.
    let bogus: Vec<String> = (0..120).map(|i| format!("made-up-{i}")).collect();
    let statuses = all_at_once(&s.url, bogus.clone());
    assert!(statuses.iter().all(|&c| c == 401), "{statuses:?}");
    let stats = get(&format!("{hub_url}/stats")).body;
    let peak = stats["peak"].as_u64().unwrap();
    assert!(
        (2..=16).contains(&peak),
        "at most 16 Hub questions at once: {stats}"
    );
    let statuses = all_at_once(&s.url, bogus);
    assert!(statuses.iter().all(|&c| c == 401), "{statuses:?}");
    let stats = get(&format!("{hub_url}/stats")).body;
    let asked: u64 = stats["asked"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(t, _)| t.starts_with("made-up-"))
        .map(|(_, n)| n.as_u64().unwrap())
        .sum();
    assert_eq!(asked, 120, "refused tokens are cached: {stats}");
    // The working user is still cached.
    assert_eq!(
        get_auth(&format!("{}/v1/models", s.url), Some("good-ada")).status,
        200
    );
    assert_eq!(
        get(&format!("{hub_url}/stats")).body["asked"]["good-ada"],
        1
    );

    drop(s);
}

/// Hardening 15: with no users (open mode on loopback), the admin API is
/// not everyone's: only the local admin token — a file only the service's
/// account can read, which `aula ps|load|unload` send — opens it, and every
/// admin route agrees.
#[test]
fn open_mode_admin_routes_need_the_local_admin_token() {
    use std::os::unix::fs::PermissionsExt;
    let mock = spawn_mock(0);
    let home = temp_home("open-admin");
    std::fs::write(
        home.join("aula.toml"),
        format!("[[models]]\nname = \"mock\"\nurl = \"{}\"\n", mock.url),
    )
    .unwrap();
    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    let token_file = home.join("admin-token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let token = std::fs::read_to_string(&token_file).unwrap();

    // Open mode still serves the API to anyone on loopback...
    let chat = post_auth(
        &format!("{}/v1/chat/completions", s.url),
        None,
        &chat_body("mock", "hi", 2),
    );
    assert_eq!(chat.status, 200, "{}", chat.text);
    // ...but no admin route, with no key or any other key.
    // (Anonymous users are students: 403; a wrong Aula-style key: 401.)
    for (key, want) in [
        (None, 403),
        (Some("none"), 403),
        (Some("aula-local-not-the-token-0123456789abcdef"), 401),
    ] {
        let r = get_auth(&format!("{}/admin/ps", s.url), key);
        assert_eq!(r.status, want, "{key:?}: {}", r.text);
        for path in ["/admin/reload", "/admin/unload/mock", "/admin/load/mock"] {
            let r = post_auth(&format!("{}{path}", s.url), key, &serde_json::json!({}));
            assert_eq!(r.status, want, "{path} {key:?}: {}", r.text);
        }
    }
    // The token opens them; the CLI finds it on its own.
    let r = get_auth(&format!("{}/admin/ps", s.url), Some(token.trim()));
    assert_eq!(r.status, 200, "{}", r.text);
    let r = post_auth(
        &format!("{}/admin/reload", s.url),
        Some(token.trim()),
        &serde_json::json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let (ok, out, err) = run_aula(&["ps", "--url", &s.url, "--json"], &home);
    assert!(ok, "{out}{err}");
    drop(s);
}

/// Issue 30, finding 11: a second `aula serve` on the same data directory
/// refuses to start, naming the gateway that holds it; the first goes on.
#[test]
fn a_second_gateway_on_the_same_data_directory_refuses_to_start() {
    let (home, s, _mock, _key) = gateway_with_a_key("two-gateways");
    let mut second = std::process::Command::new(aula_exe())
        .args(["serve", "--port", "0"])
        .env("AULA_HOME", &*home)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = second.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            panic!("a second gateway started on the same data directory");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success());
    assert!(
        err.contains(&format!("pid {}", s.pid())) && err.contains("data directory"),
        "{err}"
    );
    assert_eq!(get(&format!("{}/healthz", s.url)).status, 200);
}

/// An upload begun with its headers and the start of its body, then left
/// hanging: it holds one of its user's upload slots.
fn hanging_upload(addr: &str, key: &str) -> TcpStream {
    let mut c = TcpStream::connect(addr).unwrap();
    let body = "--B\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nuser_data\r\n\
                --B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n\r\nx";
    c.write_all(
        format!(
            "POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 1000000\r\n\r\n{body}"
        )
        .as_bytes(),
    )
    .unwrap();
    c
}

/// Issue 30, finding 10: an upload refused before its body is read (the
/// user already has 4 under way) still reaches the client as its 429, the
/// whole body sent, never as a connection closed under a client that is
/// still sending.
///
/// The four hanging uploads are counted (`aula_uploads_under_way` reads 4)
/// before the fifth starts: once, the fifth reached the gateway first and
/// took a slot, one hanging upload was refused instead, and every later
/// upload found a free slot.
#[test]
fn an_upload_refused_before_its_body_is_read_still_gets_its_answer() {
    let (home, s, _mock, key) = gateway_with_a_key("upload-refusal");
    let admin = std::fs::read_to_string(home.join("admin-token")).unwrap();
    let a = addr(&s.url);
    let _held: Vec<TcpStream> = (0..4).map(|_| hanging_upload(&a, &key)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = get_auth(&format!("{}/metrics", s.url), Some(admin.trim())).text;
        if m.lines().any(|l| l == "aula_uploads_under_way 4") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the hanging uploads were never counted: {m}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // 16 MB: more than the socket buffers hold, so a server that stopped
    // reading would break the client's write.
    let file = vec![b'y'; 16 << 20];
    let mut c = TcpStream::connect(&a).unwrap();
    let head = "--B\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nuser_data\r\n\
                --B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.bin\"\r\n\r\n";
    let tail = "\r\n--B--\r\n";
    let len = head.len() + file.len() + tail.len();
    let mut w = c.try_clone().unwrap();
    let req = format!(
        "POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\
         Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {len}\r\n\r\n{head}"
    );
    let writer = std::thread::spawn(move || {
        w.write_all(req.as_bytes())?;
        w.write_all(&file)?;
        w.write_all(tail.as_bytes())
    });
    c.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut answer = Vec::new();
    let read = c.read_to_end(&mut answer);
    let wrote = writer.join().unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        wrote.is_ok(),
        "the client's body was cut off ({wrote:?}); it read: {read:?} {answer}"
    );
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("upload_concurrency"), "{answer}");
}

/// The process's VmRSS, in bytes (aula_fleet's /proc reader).
fn rss(pid: u32) -> u64 {
    aula_fleet::host::status_kb(pid, "VmRSS").unwrap() * 1024
}

/// Issue 30, finding 1: an upload whose part headers never end is not read
/// into memory. The gateway stops reading a small window in (so the client's
/// writes block once the socket buffers are full) and its memory does not
/// grow with what the client sends; before, one such connection held
/// +736 MB.
#[test]
fn an_upload_whose_headers_never_end_is_not_buffered() {
    let (_home, s, _mock, key) = gateway_with_a_key("endless-headers");
    let before = rss(s.pid());
    let mut c = TcpStream::connect(addr(&s.url)).unwrap();
    let total: usize = 256 << 20;
    c.write_all(
        format!(
            "POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {total}\r\n\r\n\
             --B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\nX-Long: "
        )
        .as_bytes(),
    )
    .unwrap();
    // Write until the gateway stops taking bytes (a write blocks for 5 s).
    c.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let chunk = vec![b'a'; 1 << 20];
    let mut sent = 0usize;
    while sent < total - (2 << 20) {
        match c.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    let grown = rss(s.pid()).saturating_sub(before);
    assert!(
        sent < 64 << 20,
        "the gateway kept reading a body whose headers never end: {} MB taken",
        sent >> 20
    );
    assert!(grown < 48 << 20, "the gateway grew by {} MB", grown >> 20);
}
