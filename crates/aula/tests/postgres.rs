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
    let key = add_user(&home, "pat", &["--role", "teacher", "--group", "db101"]);
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
/// not block the next start; on PostgreSQL one schedules and the other
/// stands by (503 on /readyz and on model requests) until the first dies.
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
    // Their files in one directory (a network file system in real life).
    let files = temp_home("gw-files");
    for h in [&c, &d] {
        config(h, &url);
        let toml = std::fs::read_to_string(h.join("aula.toml"))
            .unwrap()
            .replace(
                "[server]\n",
                &format!("[server]\nfiles_dir = \"{}\"\n", files.display()),
            );
        std::fs::write(h.join("aula.toml"), toml).unwrap();
    }
    let key = add_user(&c, "sam", &[]);
    let mut one = spawn_aula(&["serve", "--port", "0"], Some(&c));
    let two = spawn_aula(&["serve", "--port", "0"], Some(&d));
    let body =
        json!({"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
    let chat = |s: &Proc| {
        post_auth(
            &format!("{}/v1/chat/completions", s.url),
            Some(key.trim()),
            &body,
        )
    };
    // The first schedules; the second stands by, and says so.
    assert_eq!(chat(&one).status, 200);
    let ready = get(&format!("{}/readyz", one.url));
    assert_eq!((ready.status, &ready.body["role"]), (200, &json!("leader")));
    let ready = get(&format!("{}/readyz", two.url));
    assert_eq!(
        (ready.status, &ready.body["role"]),
        (503, &json!("standby")),
        "{}",
        ready.text
    );
    let r = chat(&two);
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.body["error"]["code"], "standby_gateway");
    let file = upload(
        &one.url,
        key.trim(),
        "notes.txt",
        b"shared notes",
        "user_data",
    );
    // Signed in on the leader's web page.
    let cookie = web_sign_in(&one.url, key.trim());
    let usage_page = |s: &Proc, cookie: &str| {
        ureq::AgentBuilder::new()
            .redirects(0)
            .build()
            .get(&format!("{}/usage", s.url))
            .set("Cookie", cookie)
            .call()
            .map_or_else(
                |e| match e {
                    ureq::Error::Status(code, _) => code,
                    e => panic!("{e}"),
                },
                |r| r.status(),
            )
    };
    assert_eq!(usage_page(&one, &cookie), 200);
    // The leader dies: the standby takes over.
    unsafe {
        libc::kill(one.pid() as i32, libc::SIGKILL);
    }
    one.child.wait().unwrap();
    let died = std::time::Instant::now();
    wait_for(
        "the standby to lead",
        std::time::Duration::from_secs(60),
        || get(&format!("{}/readyz", two.url)).status == 200,
    );
    eprintln!(
        "leader killed: the standby led after {:.2} s",
        died.elapsed().as_secs_f64()
    );
    assert_eq!(get(&format!("{}/readyz", two.url)).body["role"], "leader");
    assert_eq!(chat(&two).status, 200);
    // The file uploaded through the dead gateway is served by the other.
    let content = get_auth(
        &format!("{}/v1/files/{file}/content", two.url),
        Some(key.trim()),
    );
    assert_eq!(
        (content.status, content.text.as_str()),
        (200, "shared notes")
    );
    // The web session too: signed in on the dead gateway, still signed in
    // on the other (sessions live in the database); a made-up one is not.
    assert_eq!(usage_page(&two, &cookie), 200);
    assert_eq!(usage_page(&two, "aula_session=made-up"), 303);
}

/// Budgets shared by two gateways on one PostgreSQL: a class hammering
/// both never gets past its budget (the ledger's sum is at most the
/// budget, where two gateways counting apart would grant it twice); a
/// gateway killed mid-stream gives its holds back within one lease; with
/// the database gone a gateway refuses (503), never serves uncounted.
#[test]
fn budgets_hold_across_two_gateways() {
    const BUDGET: u64 = 600;
    const LEASE_S: u64 = 3;
    let pg = Pg::start("budgets");
    let mock = spawn_mock(0);
    // Streams of `stall` send one token and then hold their slot.
    let stall = spawn_exe(
        &mock_exe(),
        &["0", "--token-ms", "1", "--stall-after-tokens", "1"],
        None,
    );
    let config = format!(
        "[server]\ndatabase = \"{}\"\nreservation_lease_seconds = {LEASE_S}\none_scheduler = false\n\n\
         [[models]]\nname = \"mock\"\nurl = \"{}\"\nparallel = 64\n\n\
         [[models]]\nname = \"stall\"\nurl = \"{}\"\nparallel = 4\n\n\
         [[limits]]\nuser = \"ann\"\ntokens_per_day = {BUDGET}\n\n\
         [[limits]]\nuser = \"kim\"\nconcurrent_requests = 1\n",
        pg.url(),
        mock.url,
        stall.url
    );
    let (a, b) = (temp_home("budget-a"), temp_home("budget-b"));
    for h in [&a, &b] {
        std::fs::write(h.join("aula.toml"), &config).unwrap();
    }
    let mut keys = std::collections::HashMap::new();
    for u in ["ann", "kim"] {
        keys.insert(u, add_user(&a, u, &[]));
    }
    let mut one = spawn_aula(&["serve", "--port", "0"], Some(&a));
    let two = spawn_aula(&["serve", "--port", "0"], Some(&b));
    let urls = [
        format!("{}/v1/chat/completions", one.url),
        format!("{}/v1/chat/completions", two.url),
    ];
    let body = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});

    // 8 clients, 25 requests each, alternating gateways.
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|c| {
                let (urls, key, body) = (&urls, &keys["ann"], body("mock"));
                s.spawn(move || {
                    (0..25)
                        .map(|i| post_auth(&urls[(c + i) % 2], Some(key), &body).status)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let ok = statuses.iter().filter(|s| **s == 200).count() as u64;
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 403),
        "{statuses:?}"
    );
    // The mock uses 12 tokens a request (8 prompt, 4 completion).
    let (done, out, err) = run_aula(&["usage", "--by", "user", "--json"], &a);
    assert!(done, "{err}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    let ann = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "ann")
        .unwrap_or_else(|| panic!("{rows}"));
    let used = ann["prompt_tokens"].as_u64().unwrap() + ann["completion_tokens"].as_u64().unwrap();
    eprintln!("two gateways, budget {BUDGET}: {ok} answered, {used} tokens in the ledger");
    assert_eq!(used, 12 * ok, "{rows}");
    assert!(used <= BUDGET, "{used} tokens used of a budget of {BUDGET}");
    // The budget was spent, not refused wholesale: more than half of it.
    assert!(used > BUDGET / 2, "only {used} of {BUDGET} used");

    // kim may run one request at a time, on any gateway. A stream through
    // gateway one holds it; once its first token arrived gateway one is
    // killed.
    let (tx, rx) = std::sync::mpsc::channel();
    let (surl, kkey) = (urls[0].clone(), keys["kim"].clone());
    let reader = std::thread::spawn(move || {
        let mut b = body("stall");
        b["stream"] = json!(true);
        let resp = ureq::post(&surl)
            .set("Authorization", &format!("Bearer {kkey}"))
            .send_string(&b.to_string())
            .unwrap();
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(resp.into_reader()));
        while let Some(Ok(l)) = lines.next() {
            if l.starts_with("data: ") {
                let _ = tx.send(());
                break;
            }
        }
        // Read on until the gateway dies (then reading fails).
        lines.map_while(Result::ok).for_each(drop);
    });
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("the first token of the held stream");
    let second = post_auth(&urls[1], Some(&keys["kim"]), &body("mock"));
    assert_eq!(second.status, 429, "{}", second.text);
    assert_eq!(second.body["error"]["code"], "concurrency_limit");
    unsafe {
        libc::kill(one.pid() as i32, libc::SIGKILL);
    }
    one.child.wait().unwrap();
    let killed = std::time::Instant::now();
    reader.join().unwrap();
    wait_for(
        "the dead gateway's hold to expire",
        std::time::Duration::from_secs(60),
        || post_auth(&urls[1], Some(&keys["kim"]), &body("mock")).status == 200,
    );
    eprintln!(
        "a gateway killed mid-stream: its hold returned after {:.1} s (lease {LEASE_S} s)",
        killed.elapsed().as_secs_f64()
    );

    // The database stops: gateway two refuses, never serves uncounted.
    drop(pg);
    let r = post_auth(&urls[1], Some(&keys["ann"]), &body("mock"));
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(
        r.body["error"]["code"], "database_unavailable",
        "{}",
        r.text
    );
}

/// The budget rules on PostgreSQL, where admission and settlement are the
/// server-side functions `aula_reserve` and `aula_settle`: all or nothing,
/// the first window without room named, settled once, an expired lease
/// charged in full, a new window seeded from the ledger.
#[test]
fn budget_functions_on_postgres() {
    use aula_store::budgets::{Counter, Hold};
    on_postgres("budget-fns", |s| async move {
        let hold = |counter, limit, amount| Hold {
            counter,
            start_ms: 0,
            limit,
            amount,
        };
        let both = [hold(Counter::Day, 1000, 400), hold(Counter::Active, 2, 1)];
        assert_eq!(
            s.reserve_budget("a", "g1", "u", &both, 10).await.unwrap(),
            Ok(())
        );
        assert_eq!(
            s.reserve_budget("b", "g1", "u", &both, 10).await.unwrap(),
            Ok(())
        );
        assert_eq!(
            s.budget_window("u", Counter::Day, 0).await.unwrap(),
            (0, 800)
        );
        let r = s
            .reserve_budget("c", "g1", "u", &both, 10)
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(
            (r.hold.counter, r.used, r.reserved),
            (Counter::Active, 0, 2)
        );
        assert_eq!(
            s.budget_window("u", Counter::Day, 0).await.unwrap(),
            (0, 800)
        );
        assert!(s.settle_budget("a", Some(50)).await.unwrap());
        assert!(!s.settle_budget("a", Some(50)).await.unwrap());
        assert_eq!(
            s.budget_window("u", Counter::Day, 0).await.unwrap(),
            (50, 400)
        );
        assert_eq!(
            s.reserve_budget("c", "g2", "u", &both, 100).await.unwrap(),
            Ok(())
        );
        // The day window (taken after concurrency) has no room: the
        // concurrency hold taken before it is undone too.
        let r = s
            .reserve_budget("d", "g2", "u", &[hold(Counter::Day, 1000, 400)], 100)
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(
            (r.hold.counter, r.used, r.reserved),
            (Counter::Day, 50, 800)
        );
        assert_eq!(s.renew_budgets("g2", 200).await.unwrap(), 1);
        assert_eq!(
            s.expired_budgets(150, 10).await.unwrap(),
            vec!["b".to_string()]
        );
        assert!(s.settle_budget("b", None).await.unwrap());
        assert_eq!(
            s.budget_window("u", Counter::Day, 0).await.unwrap(),
            (450, 400)
        );
        assert!(s.settle_budget("c", Some(0)).await.unwrap());
        assert_eq!(
            s.budget_window("u", Counter::Day, 0).await.unwrap(),
            (450, 0)
        );
        assert_eq!(
            s.budget_window("u", Counter::Active, 0).await.unwrap(),
            (0, 0)
        );
        assert_eq!(s.budget_holds().await.unwrap(), (0, 0));
        // Requests per minute: settled as one request.
        let minute = Hold {
            counter: Counter::MinuteRequests,
            start_ms: 60_000,
            limit: 1,
            amount: 1,
        };
        assert_eq!(
            s.reserve_budget("e", "g", "u", &[minute], 10)
                .await
                .unwrap(),
            Ok(())
        );
        assert!(
            s.reserve_budget("f", "g", "u", &[minute], 10)
                .await
                .unwrap()
                .is_err()
        );
        s.settle_budget("e", Some(7)).await.unwrap();
        assert_eq!(
            s.budget_window("u", Counter::MinuteRequests, 60_000)
                .await
                .unwrap(),
            (1, 0)
        );
    });
}

/// Fine-tuning jobs on a PostgreSQL shared by several gateways: of two
/// gateways claiming a job at once, one wins; a dead gateway's job goes
/// back to the queue, a live one's stays.
#[test]
fn fine_tuning_claims_on_postgres() {
    use aula_store::{FineTuneJob, JobStatus};
    on_postgres("ft-claims", |s| async move {
        let job = |id: &str, status| FineTuneJob {
            id: id.into(),
            owner: "ann".into(),
            owner_role: aula_store::Role::Student,
            status,
            base_model: "smol".into(),
            fine_tuned_model: None,
            spec: "{}".into(),
            error: None,
            trained_tokens: 0,
            planned_bytes: 1,
            created_ms: 1,
            started_ms: None,
            finished_ms: None,
            estimated_finish_ms: None,
            shared_groups: "[]".into(),
            deleted_ms: None,
        };
        s.put_ft_job(&job("a", JobStatus::Queued)).await.unwrap();
        s.put_ft_job(&job("b", JobStatus::Queued)).await.unwrap();
        let a = job("a", JobStatus::Running);
        let (one, two) = tokio::join!(s.claim_ft_job(&a, "gw-1"), s.claim_ft_job(&a, "gw-2"));
        let (one, two) = (one.unwrap(), two.unwrap());
        assert!(one != two, "exactly one claim wins: {one} {two}");
        let winner = if one { "gw-1" } else { "gw-2" };
        let loser = if one { "gw-2" } else { "gw-1" };
        // Only the gateway training it writes its progress.
        assert!(
            !s.update_ft_job_by(&a, &[JobStatus::Running], loser)
                .await
                .unwrap()
        );
        assert!(
            s.update_ft_job_by(&a, &[JobStatus::Running], winner)
                .await
                .unwrap()
        );
        assert!(
            s.claim_ft_job(&job("b", JobStatus::Running), "gw-3")
                .await
                .unwrap()
        );
        // gw-3 died: its job goes back; the winner's stays running.
        let back = s
            .requeue_orphaned_ft_jobs(&[winner.to_string()])
            .await
            .unwrap();
        assert_eq!(back, vec!["b".to_string()]);
        let status = |id: &'static str| {
            let s = s.clone();
            async move { s.ft_job(id).await.unwrap().unwrap().status }
        };
        assert_eq!(status("a").await, JobStatus::Running);
        assert_eq!(status("b").await, JobStatus::Queued);
    });
}

/// Files to ingest on a PostgreSQL shared by several gateways: a live
/// gateway's claim holds; a claim of a gateway whose heartbeat stopped
/// (older than the stale time) is free to take.
#[test]
fn ingestion_claims_on_postgres() {
    use aula_store::{FileStatus, GatewayRow, StoreFileRecord, VectorStoreRecord};
    on_postgres("ingest-claims", |s| async move {
        s.create_vector_store(&VectorStoreRecord {
            id: "vs_a".into(),
            owner: "ann".into(),
            owner_role: aula_store::Role::Teacher,
            owner_groups: vec![],
            name: "notes".into(),
            description: None,
            metadata: "{}".into(),
            chunking: "{}".into(),
            generation: 0,
            created_ms: 1,
            last_active_ms: 1,
            shares: vec![],
        })
        .await
        .unwrap();
        let file = StoreFileRecord {
            store_id: "vs_a".into(),
            file_id: "file-1".into(),
            status: FileStatus::InProgress,
            error_code: None,
            error_message: None,
            attributes: "{}".into(),
            chunking: "{}".into(),
            usage_bytes: 0,
            created_ms: 1,
        };
        assert!(s.add_store_file(&file, None).await.unwrap());
        let now = aula_store::now_ms();
        let gw = |id: &str, seen_ms| GatewayRow {
            id: id.into(),
            host: "box".into(),
            pid: 1,
            address: "127.0.0.1:1".into(),
            started_ms: 1,
            seen_ms,
        };
        s.join_gateways(&gw("live", now)).await.unwrap();
        s.join_gateways(&gw("other", now)).await.unwrap();
        assert!(s.claim_store_file("vs_a", "file-1", "live").await.unwrap());
        assert!(!s.claim_store_file("vs_a", "file-1", "other").await.unwrap());
        // `live` stops renewing its row: after the stale time its claim is free.
        s.gateway_heartbeat(&gw("live", now - 60_000))
            .await
            .unwrap();
        assert!(s.claim_store_file("vs_a", "file-1", "other").await.unwrap());
    });
}

/// Run `f` on a store of a PostgreSQL of its own (started for the test).
fn on_postgres<F, Fut>(tag: &str, f: F)
where
    F: FnOnce(aula_store::Store) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let pg = Pg::start(tag);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = aula_store::Store::open(&pg.url()).await.unwrap();
        f(s.clone()).await;
        s.close().await;
    });
}

/// Issue 32: vector stores search inside PostgreSQL — BM25 over the
/// chunks' terms (the in-memory formula, in SQL) and, with pgvector,
/// cosine similarity on an HNSW index — and rank as the in-memory index
/// does, filters and thresholds included; chunks written before the search
/// columns existed are indexed by the gateway's backfill. On a PostgreSQL
/// without pgvector (Debian's), lexical search still runs in the database
/// and searches by meaning are left to memory.
#[test]
fn vector_stores_search_inside_postgres_as_in_memory() {
    for pgvector in [true, false] {
        let pg = if pgvector {
            Pg::start_with_pgvector("search-vec")
        } else {
            Pg::start("search-plain")
        };
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let s = aula_store::Store::open(&pg.url()).await.unwrap();
            assert_eq!(s.searches_in_database(), (true, pgvector));
            let ix = fill_search_store(&s).await;
            compare_searches(&s, &ix, pgvector).await;
            // Rows from before the search columns: the backfill indexes them.
            let vec = if pgvector { ", vec = NULL" } else { "" };
            pg.psql(&format!(
                "UPDATE chunks SET tsv = NULL, nterms = NULL, dim = NULL{vec}"
            ));
            assert_eq!(s.unindexed_chunks(1000).await.unwrap().len(), ix.len());
            aula_gateway::rag::index_missing(&s).await;
            assert!(s.unindexed_chunks(1000).await.unwrap().is_empty());
            compare_searches(&s, &ix, pgvector).await;
            s.close().await;
        });
    }
}

/// A store of 60 chunks in 12 files (attributes `week` 1-3) with words
/// from a small vocabulary and 8-dimensional vectors; the same chunks in
/// an in-memory index.
async fn fill_search_store(s: &aula_store::Store) -> aula_rag::Index {
    use aula_store::{FileStatus, NewChunk, StoreFileRecord, VectorStoreRecord};
    const WORDS: [&str; 16] = [
        "cell",
        "plant",
        "energy",
        "mitochondria",
        "light",
        "water",
        "protein",
        "membrane",
        "growth",
        "division",
        "genes",
        "enzymes",
        "roots",
        "leaves",
        "sugar",
        "oxygen",
    ];
    s.create_vector_store(&VectorStoreRecord {
        id: "vs_s".into(),
        owner: "ann".into(),
        owner_role: aula_store::Role::Teacher,
        owner_groups: vec![],
        name: "biology".into(),
        description: None,
        metadata: "{}".into(),
        chunking: "{}".into(),
        generation: 0,
        created_ms: 1,
        last_active_ms: 1,
        shares: vec![],
    })
    .await
    .unwrap();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut ix = aula_rag::Index::new(8);
    for f in 0..12 {
        let file_id = format!("file-{f:02}");
        let attrs = json!({"week": f % 3 + 1});
        let file = StoreFileRecord {
            store_id: "vs_s".into(),
            file_id: file_id.clone(),
            status: FileStatus::InProgress,
            error_code: None,
            error_message: None,
            attributes: attrs.to_string(),
            chunking: "{}".into(),
            usage_bytes: 0,
            created_ms: 100 + f,
        };
        assert!(s.add_store_file(&file, None).await.unwrap());
        let chunks: Vec<NewChunk> = (0..5)
            .map(|_| {
                let n = 3 + (next() % 12) as usize;
                let text: Vec<&str> = (0..n).map(|_| WORDS[(next() % 16) as usize]).collect();
                let text = format!("The {} of it.", text.join(" "));
                NewChunk {
                    terms: aula_rag::lexical::analyze(&text),
                    text,
                    tokens: n as i64,
                    embedding: (0..8)
                        .map(|_| (next() % 1000) as f32 / 500.0 - 1.0)
                        .collect(),
                }
            })
            .collect();
        assert!(
            s.complete_store_file("vs_s", &file_id, &chunks, 1)
                .await
                .unwrap()
        );
        for c in chunks {
            ix.add(
                aula_rag::Chunk {
                    file_id: file_id.as_str().into(),
                    filename: file_id.as_str().into(),
                    attributes: std::sync::Arc::new(attrs.as_object().unwrap().clone()),
                    text: c.text,
                },
                c.embedding,
            )
            .unwrap();
        }
    }
    ix
}

/// Each query, mode, filter and threshold: the database's results are the
/// in-memory index's, in the same order with the same scores.
async fn compare_searches(s: &aula_store::Store, ix: &aula_rag::Index, pgvector: bool) {
    use aula_gateway::rag::search::{Request, StatsCache, in_database};
    use aula_rag::Mode;
    let stats = StatsCache::default();
    let week2 =
        aula_rag::Filter::parse(&json!({"type": "gte", "key": "week", "value": 2})).unwrap();
    let queries = [
        (
            "energy from light",
            vec![0.3, -0.2, 0.9, 0.1, 0.0, -0.5, 0.4, 0.2],
        ),
        (
            "Mitochondria and membranes",
            vec![-0.7, 0.1, 0.2, 0.6, -0.3, 0.0, 0.1, -0.9],
        ),
        (
            "roots water sugar oxygen",
            vec![0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1],
        ),
        (
            "nothing matches this",
            vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        ),
    ];
    let modes: &[Mode] = if pgvector {
        &[Mode::Lexical, Mode::Dense, Mode::Hybrid]
    } else {
        &[Mode::Lexical]
    };
    let mut compared = 0;
    for (text, v) in &queries {
        for &mode in modes {
            for filter in [None, Some(&week2)] {
                for (k, threshold) in [(10, None), (50, None), (5, Some(0.5))] {
                    let texts = [text.to_string()];
                    let vectors = [v.clone()];
                    let want: Vec<(String, String, f32)> = ix
                        .search(&aula_rag::Query {
                            texts: &texts,
                            vectors: &vectors,
                            mode,
                            filter,
                            k,
                            threshold,
                        })
                        .into_iter()
                        .map(|h| (h.chunk.file_id.to_string(), h.chunk.text.clone(), h.score))
                        .collect();
                    let req = Request {
                        queries: &texts,
                        mode,
                        filter,
                        k,
                        threshold,
                    };
                    let got = in_database(s, &stats, "vs_s", &req, &vectors)
                        .await
                        .unwrap();
                    let what = format!(
                        "{text:?} {mode:?} filter {} k {k} {threshold:?}",
                        filter.is_some()
                    );
                    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
                    for (g, (file, chunk, score)) in got.iter().zip(&want) {
                        assert_eq!((&g.file_id, &g.text), (file, chunk), "{what}");
                        assert!(
                            (g.score - score).abs() < 1e-4,
                            "{what}: {} vs {score}",
                            g.score
                        );
                        if filter.is_some() {
                            assert!(g.attributes["week"].as_i64().unwrap() >= 2, "{what}");
                        }
                    }
                    compared += want.len();
                }
            }
        }
    }
    assert!(
        compared > 100,
        "the queries found too little to compare ({compared})"
    );
}
