//! `aula assess` on the built-in SmolLM2: the profile it writes holds
//! measured figures (each with its repeats, spread and method), a second run
//! keeps them, and `aula plan --hardware this` plans with them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;
use common::*;

#[test]
fn assess_measures_this_machine_and_plan_plans_with_it() {
    let home = temp_home("assess");
    let smol = model_path(SMOL_FILE);
    let smol = smol.to_str().unwrap();
    // Nothing assessed yet: the plan says what to run.
    let (ok, _, err) = run_aula(&["plan", "--hardware", "this", smol], &home);
    assert!(!ok && err.contains("aula assess"), "{err}");
    // No gateway answers at this address, so nothing stops the run.
    let args = [
        "assess",
        "--quick",
        "--model",
        smol,
        "--context",
        "512",
        "--parallel",
        "2",
        "--url",
        "http://127.0.0.1:9",
    ];
    let (ok, out, err) = run_aula(&args, &home);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("aula plan --hardware this"), "{out}");
    let read = || {
        let text = std::fs::read_to_string(home.join("assessment.toml")).unwrap();
        aula_planner::assessment::Assessment::from_toml(&text).unwrap()
    };
    let a = read();
    assert!(a.bandwidth_gbs.as_ref().unwrap().median > 0.0, "{a:?}");
    let m = &a.models[0];
    for (k, f) in [
        ("prefill", &m.prefill_tps),
        ("decode 1", &m.decode_tps_1),
        ("decode n", &m.decode_tps_n),
        ("load", &m.load_s),
    ] {
        assert!(
            f.median > 0.0 && f.min <= f.median && f.median <= f.max,
            "{k}: {f:?}"
        );
        assert_eq!(f.runs, 2, "{k}");
        assert!(!f.method.is_empty());
    }
    assert!(m.allocated_bytes > 0 && m.planned_bytes > 0, "{m:?}");
    assert_eq!(m.parallel, 2);
    // Run again: what this build measured is kept, not measured again.
    let (ok, out, err) = run_aula(&args, &home);
    assert!(ok && err.contains("kept from the last run"), "{out}\n{err}");
    assert_eq!(read().models, a.models);
    // The plan uses the measured machine: its speeds are estimated (an
    // unassessed CPU has none).
    let (ok, out, err) = run_aula(&["plan", "--hardware", "this", smol, "--json"], &home);
    assert!(ok, "{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["hardware"]["id"], "this");
    assert!(
        plan["estimates"][0]["speed"]["single_stream_tokens_per_s"]
            .as_f64()
            .unwrap()
            > 0.0,
        "{}",
        plan["estimates"][0]["speed"]
    );
}

/// `aula plan --students`: a class planned from a catalog profile (speeds
/// predicted) and from an assessment (speeds measured), each saying which;
/// more students than it holds miss the target; a target no one student can
/// meet says why.
#[test]
fn plan_students_says_how_many_and_from_what() {
    let home = temp_home("students");
    let plan = |args: &[&str]| -> serde_json::Value {
        let (ok, out, err) = run_aula(args, &home);
        assert!(ok, "{args:?}: {err}");
        serde_json::from_str(&out).unwrap()
    };
    let p = plan(&[
        "plan",
        "llama-3.1-8b",
        "--hardware",
        "gb10",
        "--precision",
        "q4_k_m",
        "--users",
        "8",
        "--students",
        "500",
        "--json",
    ]);
    let held = p["capacity"]["students"].as_u64().unwrap();
    assert!(held > 0 && held < 500, "{p}");
    assert!(
        p["engines"][0]["source"]
            .as_str()
            .unwrap()
            .starts_with("predicted"),
        "{p}"
    );
    let at = &p["capacity"]["at"];
    assert!(at["ttft_p95_s"].as_f64().unwrap() <= 2.0, "{p}");
    assert!(at["rate_p50_tps"].as_f64().unwrap() >= 10.0, "{p}");
    let above = &p["capacity"]["above"];
    assert_eq!(above["students"].as_u64().unwrap(), held + 1, "{p}");
    assert!(
        p["asked"]["ttft_p95_s"].as_f64().unwrap() > 2.0,
        "500 students wait: {p}"
    );
    // A rate no single stream reaches: no class, and the reason.
    let (ok, out, err) = run_aula(
        &[
            "plan",
            "llama-3.1-8b",
            "--hardware",
            "gb10",
            "--students",
            "--rate",
            "5000",
        ],
        &home,
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("holds no class") && out.contains("tok/s"),
        "{out}"
    );
    // Bad input: a clear error naming the flag.
    let (ok, _, err) = run_aula(
        &["plan", "llama-3.1-8b", "--students", "--think", "soon"],
        &home,
    );
    assert!(!ok && err.contains("--think"), "{err}");

    // An assessment of this machine (figures written here, not measured:
    // the test is of the planning): its model is planned from them.
    use aula_planner::assessment::{Assessment, Figure, ModelFigures};
    let smol = model_path(SMOL_FILE);
    let fig = |x: f64| Figure::of(&[x], "test").unwrap();
    let assessment = Assessment {
        date: "2026-12-06 20:00 UTC".into(),
        build: "test".into(),
        backend: "cpu".into(),
        cores: 2,
        memory_gb: 24.0,
        usable_gb: 20.0,
        bandwidth_gbs: Some(fig(20.0)),
        models: vec![ModelFigures {
            name: aula_planner::model_name_for_file(&smol),
            file: smol.display().to_string(),
            weight_bytes: 96_576_768,
            params: 134_515_008,
            context: 2048,
            parallel: 4,
            load_s: fig(0.2),
            allocated_bytes: 1,
            planned_bytes: 1,
            prefill_tps: fig(400.0),
            decode_tps_1: fig(100.0),
            decode_tps_n: fig(160.0),
        }],
        decode_fit: None,
    };
    std::fs::write(home.join("assessment.toml"), assessment.to_toml().unwrap()).unwrap();
    let smol = smol.to_str().unwrap();
    let p = plan(&[
        "plan",
        smol,
        "--hardware",
        "this",
        "--students",
        "--think",
        "5s",
        "--prompt-tokens",
        "64",
        "--answer-tokens",
        "64",
        "--json",
    ]);
    let src = p["engines"][0]["source"].as_str().unwrap();
    assert!(
        src.starts_with("measured") && src.contains("100.0 tok/s"),
        "{p}"
    );
    assert!(p["capacity"]["students"].as_u64().unwrap() > 0, "{p}");
}

/// `aula bench --think`: one request at a time per student, each after a
/// pause; the report says so and carries each answer's rate.
#[test]
fn bench_think_runs_a_class() {
    let mock = spawn_mock(1);
    let r = bench_mock(
        &mock.url,
        &[
            "--users",
            "3",
            "--requests",
            "9",
            "--think",
            "20ms",
            "--stream",
            "--max-tokens",
            "4",
        ],
    );
    assert_eq!(r["requests_ok"], 9, "{r}");
    assert_eq!(r["concurrency"], 3, "{r}");
    assert!((r["think_s"].as_f64().unwrap() - 0.02).abs() < 1e-9, "{r}");
    let rate = &r["answer_rate"];
    assert!(
        rate["count"].as_u64().unwrap() > 0 && rate["p50_tps"].as_f64().unwrap() > 0.0,
        "{r}"
    );
    // --think with --heavy: user 0 keeps 2 requests in flight, users 1 and
    // 2 think; the report splits the heavy user's time to first token off.
    // (This mock answers each request's max_tokens.)
    let follows = spawn_exe(
        &mock_exe(),
        &["0", "--token-ms", "1", "--follow-max-tokens"],
        None,
    );
    let r = bench_mock(
        &follows.url,
        &[
            "--users",
            "3",
            "--think",
            "20ms",
            "--heavy",
            "2",
            "--requests",
            "12",
            "--stream",
            "--max-tokens",
            "4",
            "--heavy-max-tokens",
            "6",
        ],
    );
    assert_eq!(r["requests_ok"], 12, "{r}");
    assert_eq!(r["concurrency"], 4, "{r}");
    assert!(r["heavy_user_ttft"]["count"].as_u64().unwrap() > 0, "{r}");
    assert!(r["other_users_ttft"]["count"].as_u64().unwrap() > 0, "{r}");
    // The heavy user asks for --heavy-max-tokens, the others --max-tokens.
    for u in r["per_user"].as_array().unwrap() {
        let per = if u["user"] == 0 { 6 } else { 4 };
        assert_eq!(
            u["completion_tokens"],
            u["requests_ok"].as_u64().unwrap() * per,
            "{r}"
        );
    }
    // Two ways of naming heavy users at once is refused.
    let out = std::process::Command::new(aula_exe())
        .args([
            "bench",
            "--url",
            &mock.url,
            "--model",
            "mock",
            "--users",
            "3",
            "--think",
            "1s",
            "--heavy",
            "2",
            "--heavy-users",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// `aula bench --duration`: the figures are for the window. Answers that
/// would run 20 s each (4,096 tokens at 5 ms) are closed when the window
/// ends, once they have their first token; only the tokens inside the
/// window count, and the run's time is the window, not the 20 s. With one
/// mock slot, the second request waits for the first to be closed and is
/// still waited for its first token.
#[test]
fn bench_duration_measures_its_window() {
    let mock = spawn_exe(
        &mock_exe(),
        &[
            "0",
            "--token-ms",
            "5",
            "--follow-max-tokens",
            "--slots",
            "1",
        ],
        None,
    );
    let r = bench_mock(
        &mock.url,
        &[
            "--concurrency",
            "2",
            "--duration",
            "1s",
            "--stream",
            "--max-tokens",
            "4096",
        ],
    );
    assert_eq!(r["duration_s"], 1.0, "{r}");
    assert_eq!(r["requests_ok"], 0, "{r}");
    assert_eq!(r["requests_failed"], 0, "{r}");
    assert_eq!(r["requests_cut"], 2, "{r}");
    // Both have a first token: the second got the slot when the first was
    // closed at the window's end.
    assert_eq!(r["ttft"]["count"], 2, "{r}");
    assert!(r["ttft"]["max_ms"].as_f64().unwrap() >= 1000.0, "{r}");
    assert_eq!(r["e2e"]["count"], 0, "{r}");
    // At most one token every 5 ms, from one slot, inside 1 s.
    let tokens = r["completion_tokens"].as_u64().unwrap();
    assert!(tokens <= 201, "{r}");
    assert_eq!(
        r["output_tokens_per_s"].as_f64().unwrap(),
        tokens as f64,
        "{r}"
    );
}

/// `aula bench --duration`: a request that has no first token one more
/// window after the end is given up and counted as failed, so a server that
/// never answers does not hold the run open (before, this run never ended).
#[test]
fn bench_duration_gives_up_on_a_server_that_never_answers() {
    // Streamed answers send their headers, then nothing, for ever.
    let mock = spawn_exe(
        &mock_exe(),
        &["0", "--token-ms", "1", "--stall-after-tokens", "0"],
        None,
    );
    let r = bench_mock(
        &mock.url,
        &["--concurrency", "2", "--duration", "1s", "--stream"],
    );
    assert_eq!(r["duration_s"], 1.0, "{r}");
    assert_eq!(r["requests_ok"], 0, "{r}");
    assert_eq!(r["requests_cut"], 0, "{r}");
    // Each user's first question (a user started late on a busy machine
    // may have none); none of them answered.
    let failed = r["requests_failed"].as_u64().unwrap();
    assert!((1..=2).contains(&failed), "{r}");
    assert_eq!(r["errors"]["no answer"].as_u64(), Some(failed), "{r}");
    assert_eq!(r["ttft"]["count"], 0, "{r}");
}

/// `aula bench --think --open-loop`: a user's next question does not wait
/// for its answer. Against a mock whose answers stall after their first
/// token (they would never end), two closed-loop users could have two
/// questions in flight; open-loop users keep asking, and at the end of the
/// window every question is closed, each with its first token.
#[test]
fn bench_open_loop_users_do_not_wait_for_answers() {
    let mock = spawn_exe(
        &mock_exe(),
        &["0", "--token-ms", "1", "--stall-after-tokens", "1"],
        None,
    );
    let r = open_loop_pair(&mock.url, &["--stream"]);
    assert_eq!(r["open_loop"], true, "{r}");
    let cut = r["requests_cut"].as_u64().unwrap();
    assert!(cut >= 3, "{r}");
    assert_eq!(r["ttft"]["count"].as_u64().unwrap(), cut, "{r}");
    assert_eq!(r["requests_ok"], 0, "{r}");
    let stats = get(&format!("{}/stats", mock.url)).body;
    assert!(stats["max_in_flight"].as_u64().unwrap() >= 3, "{stats} {r}");
}

/// A user whose key is refused stops asking, in the open loop as in the
/// closed one: two open-loop users with a key the gateway does not know,
/// asking every 50 ms on average for 2 s (some 80 questions), are refused
/// for the few they had sent before the first refusal came back.
#[test]
fn bench_open_loop_users_stop_when_refused() {
    let mock = spawn_mock(0);
    let g = TestGateway::new("bench-refused").url_model("mock", &mock.url);
    let s = g.start();
    let r = open_loop_pair(&s.url, &["--api-key", "aula-not-a-key"]);
    let refused = r["errors"]["http 401"].as_u64().unwrap_or(0);
    assert!((2..=20).contains(&refused), "{r}");
    assert_eq!(r["requests_failed"].as_u64().unwrap(), refused, "{r}");
}

/// `aula bench --json` with two open-loop users asking every 50 ms on
/// average for 2 s, against `url`, with `extra` arguments.
fn open_loop_pair(url: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "--users",
        "2",
        "--think",
        "50ms",
        "--open-loop",
        "--duration",
        "2s",
    ];
    args.extend_from_slice(extra);
    bench_mock(url, &args)
}

/// `aula bench --url URL --model mock ARGS --json`: its report.
fn bench_mock(url: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["bench", "--url", url, "--model", "mock"];
    all.extend_from_slice(args);
    all.push("--json");
    aula_json(&all)
}
