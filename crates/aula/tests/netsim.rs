//! Several gateways on a simulated network (issue 32): PostgreSQL, two
//! gateways and a box (a mock engine) each in a network namespace this test
//! makes, joined by a bridge; the client is this process. Only addresses
//! inside those namespaces (10.213.0.0/24) are used. Needs root (`ip
//! netns`); elsewhere it says so and does nothing.
//!
//! What it shows, with the figures it prints:
//! - one gateway schedules, the other stands by;
//! - the model is served by two boxes (each `aula serve` with its own
//!   fleet, reached with a key of theirs); one box killed, every request
//!   still answers (routed to the other);
//! - a revoked key is refused by both gateways (time measured);
//! - a gateway cut off from PostgreSQL (a blackhole route: packets vanish,
//!   nothing is refused) answers 503 within a bound instead of hanging, and
//!   the other gateway takes over scheduling (failover time measured) and
//!   serves; healed, the cut gateway comes back as a standby.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;
use common::pg::Pg;
use common::*;
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};

const BRIDGE: &str = "aulasim0";
const PREFIX: &str = "aulasim-";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespaces and the bridge, removed on drop (and left-overs of an
/// earlier run removed first).
struct Net {
    hosts: Vec<String>,
}

impl Net {
    fn new() -> Net {
        Net::clean();
        ip(&["link", "add", BRIDGE, "type", "bridge"]);
        ip(&["addr", "add", "10.213.0.1/24", "dev", BRIDGE]);
        ip(&["link", "set", BRIDGE, "up"]);
        Net { hosts: Vec::new() }
    }

    fn clean() {
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        for line in String::from_utf8_lossy(&list.stdout).lines() {
            if let Some(name) = line
                .split_whitespace()
                .next()
                .filter(|n| n.starts_with(PREFIX))
            {
                let _ = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", BRIDGE])
            .stderr(std::process::Stdio::null())
            .status();
    }

    /// A host `name` at 10.213.0.`last`; returns its namespace.
    fn host(&mut self, name: &str, last: u8) -> String {
        let ns = format!("{PREFIX}{name}");
        let (inside, outside) = (format!("asv-{name}"), format!("asp-{name}"));
        ip(&["netns", "add", &ns]);
        ip(&[
            "link", "add", &inside, "type", "veth", "peer", "name", &outside,
        ]);
        ip(&["link", "set", &outside, "master", BRIDGE, "up"]);
        ip(&["link", "set", &inside, "netns", &ns]);
        let addr = format!("10.213.0.{last}/24");
        ip(&["-n", &ns, "addr", "add", &addr, "dev", &inside]);
        ip(&["-n", &ns, "link", "set", &inside, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        self.hosts.push(ns.clone());
        ns
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        Net::clean();
    }
}

fn boxes_home(boxes: &[(String, Proc, TempHome, u8)], i: usize) -> &std::path::Path {
    &boxes[i].2
}

/// `exe ARGS` inside namespace `ns`, with `home` and extra environment.
fn spawn_in_env(
    ns: &str,
    exe: &std::path::Path,
    args: &[&str],
    home: &std::path::Path,
    env: &[(&str, &str)],
) -> Proc {
    let mut all = vec!["netns", "exec", ns, exe.to_str().unwrap()];
    all.extend_from_slice(args);
    spawn_exe_env(std::path::Path::new("ip"), &all, Some(home), env)
}

/// `exe ARGS` inside namespace `ns`.
fn spawn_in(
    ns: &str,
    exe: &std::path::Path,
    args: &[&str],
    home: Option<&std::path::Path>,
) -> Proc {
    let mut all = vec!["netns", "exec", ns, exe.to_str().unwrap()];
    all.extend_from_slice(args);
    spawn_exe(std::path::Path::new("ip"), &all, home)
}

#[test]
fn gateways_on_a_simulated_network() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("netsim: not root, so no network namespaces: nothing tested");
        return;
    }
    let mut net = Net::new();
    let pg_ns = net.host("pg", 2);
    let gw1_ns = net.host("gw1", 3);
    let gw2_ns = net.host("gw2", 4);
    let pg = Pg::start_in("netsim", &pg_ns, "10.213.0.2");
    // Two boxes, each `aula serve` with its own fleet (here a mock engine
    // on the box's loopback), answering only a key of theirs.
    let mut boxes = Vec::new();
    let mut box_key = String::new();
    for (i, last) in [(1, 5u8), (2, 6u8)] {
        let ns = net.host(&format!("box{i}"), last);
        let home = temp_home(&format!("netsim-box{i}"));
        let engine = spawn_in(&ns, &mock_exe(), &["8100"], None);
        std::fs::write(
            home.join("aula.toml"),
            "[[models]]\nname = \"mock\"\nurl = \"http://127.0.0.1:8100/v1\"\nparallel = 16\n",
        )
        .unwrap();
        if i == 1 {
            assert!(run_aula(&["users", "add", "front", "--role", "teacher"], &home).0);
            let (ok, k, err) = run_aula(&["keys", "create", "front"], &home);
            assert!(ok, "{err}");
            box_key = k.trim().to_string();
        } else {
            // The same key on both boxes: box two's database is a copy of
            // box one's, its write-ahead log included where one was left
            // (box two has no database of its own: a log of its own beside
            // the copy would be replayed onto it).
            for f in ["aula.db", "aula.db-wal", "aula.db-shm"] {
                let from = boxes_home(&boxes, 0).join(f);
                if from.exists() {
                    std::fs::copy(from, home.join(f)).unwrap();
                }
            }
        }
        boxes.push((ns, engine, home, last));
    }
    // Started once both databases are made (a copy of a database in use
    // would name its gateway).
    let mut boxes: Vec<(Proc, Proc, TempHome)> = boxes
        .into_iter()
        .map(|(ns, engine, home, last)| {
            let addr = format!("10.213.0.{last}");
            let serve = spawn_in(
                &ns,
                &aula_exe(),
                &["serve", "--host", &addr, "--port", "8000"],
                Some(&home),
            );
            (serve, engine, home)
        })
        .collect();
    let config = format!(
        "[server]\ndatabase = \"{}\"\n\n[[models]]\nname = \"mock\"\n\
         url = [\"http://10.213.0.5:8000/v1\", \"http://10.213.0.6:8000/v1\"]\napi_key_env = \"AULA_BOX_KEY\"\n",
        pg.url()
    );
    let (h1, h2) = (temp_home("netsim-1"), temp_home("netsim-2"));
    for h in [&h1, &h2] {
        std::fs::write(h.join("aula.toml"), &config).unwrap();
    }
    let key = add_user(&h1, "sam", &[]);
    let serve = |ns: &str, addr: &str, home: &std::path::Path| {
        spawn_in_env(
            ns,
            &aula_exe(),
            &["serve", "--host", addr, "--port", "8080"],
            home,
            &[("AULA_BOX_KEY", &box_key)],
        )
    };
    let one = serve(&gw1_ns, "10.213.0.3", &h1);
    let two = serve(&gw2_ns, "10.213.0.4", &h2);
    let body =
        json!({"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
    let chat = |g: &Proc, key: &str| {
        post_auth(&format!("{}/v1/chat/completions", g.url), Some(key), &body)
    };
    let role = |g: &Proc| get(&format!("{}/readyz", g.url)).body["role"].clone();

    // One schedules, one stands by.
    assert_eq!(chat(&one, &key).status, 200);
    assert_eq!(role(&one), "leader");
    assert_eq!(role(&two), "standby");
    assert_eq!(chat(&two, &key).body["error"]["code"], "standby_gateway");

    // Box one dies: its requests go to box two, none fails.
    for _ in 0..6 {
        assert_eq!(chat(&one, &key).status, 200);
    }
    let (dead, _, _) = &mut boxes[0];
    unsafe {
        libc::kill(dead.pid() as i32, libc::SIGKILL);
    }
    dead.child.wait().unwrap();
    for i in 0..10 {
        let r = chat(&one, &key);
        assert_eq!(r.status, 200, "request {i} after box one died: {}", r.text);
    }

    // Another user's key, used on both, then revoked: refused by both.
    let k2 = add_user(&h1, "kit", &[]);
    wait_for(
        "both gateways to know the new key",
        Duration::from_secs(60),
        || chat(&one, &k2).status == 200 && chat(&two, &k2).status == 503,
    );
    let (ok, _, err) = run_aula(&["keys", "revoke", "kit"], &h1);
    assert!(ok, "{err}");
    let revoked = Instant::now();
    wait_for(
        "both gateways to refuse the revoked key",
        Duration::from_secs(60),
        || chat(&one, &k2).status == 401 && chat(&two, &k2).status == 401,
    );
    let took = revoked.elapsed();
    eprintln!(
        "netsim: a revoked key refused by both gateways after {:.2} s",
        took.as_secs_f64()
    );
    assert_eq!(chat(&one, &key).status, 200, "the other key still works");

    // Gateway one loses PostgreSQL: packets to it vanish.
    ip(&["-n", &gw1_ns, "route", "add", "blackhole", "10.213.0.2/32"]);
    let cut = Instant::now();
    let asked = Instant::now();
    let r = chat(&one, &key);
    let answered = asked.elapsed();
    eprintln!(
        "netsim: gateway cut off from PostgreSQL answered {} in {:.2} s",
        r.status,
        answered.as_secs_f64()
    );
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(
        answered < Duration::from_secs(30),
        "a cut gateway must answer, not hang: {answered:?}"
    );
    wait_for("gateway two to take over", Duration::from_secs(60), || {
        role(&two) == "leader"
    });
    eprintln!(
        "netsim: failover to gateway two {:.2} s after the cut",
        cut.elapsed().as_secs_f64()
    );
    assert_eq!(chat(&two, &key).status, 200);
    wait_for("gateway one to stand by", Duration::from_secs(60), || {
        role(&one) == "standby"
    });

    // Healed: gateway one is a standby again and serves nothing itself.
    ip(&["-n", &gw1_ns, "route", "del", "blackhole", "10.213.0.2/32"]);
    wait_for(
        "gateway one to reach the database again",
        Duration::from_secs(60),
        || chat(&one, &key).body["error"]["code"] == "standby_gateway",
    );
    assert_eq!(role(&two), "leader");
    assert_eq!(chat(&two, &key).status, 200);
    drop(one);
    drop(two);
    drop(pg);
    drop(net);
}
