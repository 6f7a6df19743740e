//! The same migrations, keys and ledger on PostgreSQL: a real server,
//! started by the test on loopback from the distribution's binaries
//! (scripts/test.sh installs them).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;
use common::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

fn pg_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("bin"))
                .filter(|b| b.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("PostgreSQL is not installed (/usr/lib/postgresql/*/bin/initdb): run `bash scripts/test.sh`, which installs it")
    })
}

/// A PostgreSQL server in a temporary directory, stopped on drop.
struct Pg {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

fn as_postgres(bin: &Path, tool: &str) -> Command {
    // initdb and postgres refuse to run as root.
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

impl Pg {
    fn start(tag: &str) -> Pg {
        let bin = pg_bin();
        let dir = std::env::temp_dir().join(format!("aula-pg-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if unsafe { libc::geteuid() } == 0 {
            assert!(
                Command::new("chown")
                    .args(["-R", "postgres"])
                    .arg(&dir)
                    .status()
                    .unwrap()
                    .success()
            );
        }
        let data = dir.join("data");
        let out = as_postgres(&bin, "initdb")
            .args(["-A", "trust", "-U", "aula", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = as_postgres(&bin, "pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("log"))
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                dir.display()
            ))
            .args(["-w", "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
        Pg { dir, bin, port }
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

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
    wait_for("revocation", std::time::Duration::from_secs(5), || {
        post_auth(&url, Some(&key), &body).status == 401
    });
    drop(s);
}
