//! The same migrations, keys and ledger on PostgreSQL: a real server,
//! started by the test on loopback from the distribution's binaries
//! (scripts/test.sh installs them).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;
use common::pg::Pg;
use common::*;
use serde_json::{Value, json};

#[test]
fn keys_ledger_and_usage_on_postgres() {
    let pg = Pg::start("gw");
    let mock = spawn_mock(0);
    let home = temp_home("pg");
    std::fs::write(
        home.join("aula.toml"),
        format!(
            "[server]\ndatabase = \"postgres://aula@127.0.0.1:{}/postgres\"\n\n[[models]]\nname = \"mock\"\nurl = \"{}\"\nparallel = 4\n",
            pg.port, mock.url
        ),
    )
    .unwrap();
    let (ok, _, err) = run_aula(
        &[
            "users", "add", "pat", "--role", "teacher", "--group", "db101",
        ],
        &home,
    );
    assert!(ok, "{err}");
    let (ok, key, err) = run_aula(&["keys", "create", "pat"], &home);
    assert!(ok, "{err}");
    let key = key.trim().to_string();
    assert!(
        !home.join("aula.db").exists(),
        "with a postgres:// URL nothing goes to SQLite"
    );
    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    let url = format!("{}/v1/chat/completions", s.url);
    let body =
        json!({"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
    for _ in 0..3 {
        let r = post_auth(&url, Some(&key), &body);
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    assert_eq!(post_auth(&url, Some(&key), &sb).status, 200);
    assert_eq!(post_auth(&url, Some("aula-nothing"), &body).status, 401);
    let (ok, out, err) = run_aula(&["usage", "--by", "group", "--json"], &home);
    assert!(ok, "{err}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["key"], "db101", "{rows}");
    assert_eq!(rows[0]["ok"], 4, "{rows}");
    assert_eq!(rows[0]["prompt_tokens"], 32, "{rows}");
    // Files on PostgreSQL: records, pages, the storage sum, deletion.
    let ids: Vec<String> = (0..3)
        .map(|i| upload(&s.url, &key, &format!("n{i}.txt"), b"notes", "user_data"))
        .collect();
    let files = format!("{}/v1/files", s.url);
    let page = get_auth(&format!("{files}?limit=2&order=asc"), Some(&key));
    assert_eq!(page.status, 200, "{}", page.text);
    assert_eq!(page.body["data"][0]["id"], ids[0].as_str(), "{}", page.text);
    assert_eq!(page.body["has_more"], true);
    let next = get_auth(
        &format!("{files}?limit=2&order=asc&after={}", ids[1]),
        Some(&key),
    );
    assert_eq!(next.body["data"][0]["id"], ids[2].as_str(), "{}", next.text);
    assert_eq!(next.body["has_more"], false);
    let content = get_auth(&format!("{files}/{}/content", ids[2]), Some(&key));
    assert_eq!((content.status, content.text.as_str()), (200, "notes"));
    let gone = ureq::delete(&format!("{files}/{}", ids[0]))
        .set("Authorization", &format!("Bearer {key}"))
        .call()
        .unwrap();
    assert_eq!(gone.status(), 200);
    assert_eq!(
        get_auth(&format!("{files}/{}", ids[0]), Some(&key)).status,
        404
    );
    let (ok, _, _) = run_aula(&["keys", "revoke", "pat"], &home);
    assert!(ok);
    wait_for("revocation", std::time::Duration::from_secs(60), || {
        post_auth(&url, Some(&key), &body).status == 401
    });
    drop(s);
}

/// More than one gateway on one database: on SQLite the second refuses,
/// naming the first and PostgreSQL; a gateway killed without leaving does
/// not block the next start; on PostgreSQL two serve side by side.
#[test]
fn a_second_gateway_needs_postgres() {
    let mock = spawn_mock(0);
    let config = |home: &std::path::Path, db: &str| {
        std::fs::write(
            home.join("aula.toml"),
            format!(
                "[server]\ndatabase = \"{db}\"\n\n[[models]]\nname = \"mock\"\nurl = \"{}\"\n",
                mock.url
            ),
        )
        .unwrap();
    };
    // Two data directories, one SQLite database.
    let shared = temp_home("one-db");
    let db = format!("sqlite://{}?mode=rwc", shared.join("aula.db").display());
    let (a, b) = (temp_home("gw-a"), temp_home("gw-b"));
    config(&a, &db);
    config(&b, &db);
    let mut first = spawn_aula(&["serve", "--port", "0"], Some(&a));
    let refused = std::process::Command::new(aula_exe())
        .args(["serve", "--port", "0"])
        .env("AULA_HOME", &*b)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains("another gateway uses this SQLite database")
            && err.contains(&format!("pid {}", first.pid()))
            && err.contains("postgres://"),
        "{err}"
    );
    // Killed, it leaves its row behind; its process is gone, so the next
    // gateway starts at once.
    unsafe {
        libc::kill(first.pid() as i32, libc::SIGKILL);
    }
    first.child.wait().unwrap();
    let second = spawn_aula(&["serve", "--port", "0"], Some(&b));
    let r = get(&format!("{}/readyz", second.url));
    assert_eq!(r.status, 200, "{}", r.text);
    drop(second);

    // PostgreSQL: two gateways at once, one user and key, both answer.
    let pg = Pg::start("two-gw");
    let url = format!("postgres://aula@127.0.0.1:{}/postgres", pg.port);
    let (c, d) = (temp_home("gw-c"), temp_home("gw-d"));
    config(&c, &url);
    config(&d, &url);
    let (ok, _, err) = run_aula(&["users", "add", "sam"], &c);
    assert!(ok, "{err}");
    let (ok, key, err) = run_aula(&["keys", "create", "sam"], &c);
    assert!(ok, "{err}");
    let one = spawn_aula(&["serve", "--port", "0"], Some(&c));
    let two = spawn_aula(&["serve", "--port", "0"], Some(&d));
    let body =
        json!({"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
    for s in [&one, &two] {
        let r = post_auth(
            &format!("{}/v1/chat/completions", s.url),
            Some(key.trim()),
            &body,
        );
        assert_eq!(r.status, 200, "{}", r.text);
    }
}
