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
