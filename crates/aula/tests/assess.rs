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
