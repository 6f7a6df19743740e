//! The planner's llama.cpp memory estimate against what llama.cpp really
//! allocated (the engine's `/health`), for both built-in models at several
//! context/parallel settings.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;
use common::*;

fn plan(file: &str, ctx: u32, par: u32) -> serde_json::Value {
    let v = aula_json(&[
        "plan",
        model_path(file).to_str().unwrap(),
        "--context",
        &ctx.to_string(),
        "--parallel",
        &par.to_string(),
        "--json",
    ]);
    v["estimates"][0]["memory"]["llama_cpp"].clone()
}

fn within(pred: u64, real: u64, frac: f64, what: &str) {
    let err = (pred as f64 - real as f64).abs() / real as f64;
    assert!(
        err <= frac,
        "{what}: predicted {pred}, llama.cpp allocated {real} ({:.2}% off)",
        err * 100.0
    );
}

#[test]
fn plan_matches_llama_cpp_allocations() {
    for file in [SMOL_FILE, GEMMA_FILE] {
        for (ctx, par) in [(256u32, 1u32), (512, 2), (1024, 4), (4096, 2)] {
            let e = spawn_engine(
                file,
                &[
                    "--context",
                    &ctx.to_string(),
                    "--parallel",
                    &par.to_string(),
                ],
            );
            let real = get(&format!("{}/health", e.url)).body["memory"].clone();
            drop(e);
            let p = plan(file, ctx, par);
            let what = format!("{file} ctx={ctx} parallel={par}");
            // Weights: the GGUF's tensors, exactly.
            assert_eq!(p["weights_bytes"], real["model_tensor_bytes"], "{what}");
            within(
                p["weights_bytes"].as_u64().unwrap(),
                real["model_buffer_bytes"].as_u64().unwrap(),
                0.02,
                &format!("{what} model buffer"),
            );
            within(
                p["kv_cache_bytes"].as_u64().unwrap(),
                real["kv_cache_bytes"].as_u64().unwrap(),
                0.02,
                &format!("{what} KV cache"),
            );
            within(
                p["total_bytes"].as_u64().unwrap(),
                real["total_bytes"].as_u64().unwrap(),
                0.10,
                &format!("{what} total"),
            );
        }
    }
}

#[test]
fn plan_refuses_bad_files_in_one_line() {
    let dir = temp_home("plan-bad");
    let bad = dir.join("bad.gguf");
    let full = std::fs::read(model_path(GEMMA_FILE)).unwrap();
    std::fs::write(&bad, &full[..200_000]).unwrap();
    let out = std::process::Command::new(aula_exe())
        .args(["plan", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("truncated"), "{err}");
    std::fs::write(&bad, b"hello").unwrap();
    let out = std::process::Command::new(aula_exe())
        .args(["plan", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not a GGUF"), "{err}");
}

#[test]
fn plan_cli_estimates_places_reports_and_refuses_bad_names() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(aula_exe())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&[
        "plan",
        "llama-2-7b",
        "qwen2.5-7b",
        "--hardware",
        "h100",
        "--engine",
        "vllm",
        "--precision",
        "bf16",
        "--users",
        "16",
        "--finetune",
        "--json",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["hardware"]["id"], "h100-sxm");
    assert_eq!(v["estimates"].as_array().unwrap().len(), 2);
    assert!(v["estimates"][0]["vllm"]["kv_blocks"].as_u64().unwrap() > 0);
    assert!(
        v["estimates"][0]["speed"]["single_stream_tokens_per_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(v["placement"]["fits"], true, "{}", v["placement"]);
    assert_eq!(v["placement"]["models"][0]["settings"]["slots"], 16);
    assert!(
        v["placement"]["models"][0]["command"]
            .as_str()
            .unwrap()
            .contains("--max-num-seqs 16")
    );
    assert_eq!(v["finetune"][0]["estimates"].as_array().unwrap().len(), 6);
    for (args, needle) in [
        (
            vec!["plan", "llama-2-7b", "--hardware", "tpu-v9"],
            "unknown hardware",
        ),
        (vec!["plan", "gpt-9"], "not in the catalog"),
        (
            vec!["plan", "llama-2-7b", "--engine", "ollama"],
            "unknown engine",
        ),
        (
            vec!["plan", "llama-2-7b", "--precision", "int3"],
            "unknown precision",
        ),
    ] {
        let (ok, _, err) = run(&args);
        assert!(
            !ok && err.contains(needle) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    let dir = temp_home("report");
    let md = dir.join("spark.md");
    let (ok, _, err) = run(&[
        "plan",
        "--report",
        md.to_str().unwrap(),
        "--hardware",
        "gb10",
    ]);
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&md).unwrap();
    assert!(text.contains("| llama-3.1-70b |") && text.contains("spark.svg"));
    assert!(
        std::fs::read_to_string(dir.join("spark.svg"))
            .unwrap()
            .starts_with("<svg")
    );
}

fn plan_json(args: &[&str]) -> serde_json::Value {
    plan_summary(args)["estimates"][0].clone()
}

/// `aula plan ARGS --json`, the whole summary.
fn plan_summary(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(aula_exe())
        .arg("plan")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
}

/// `--gpu-layers`: llama.cpp's -ngl split between GPU and host memory, on a
/// discrete GPU and on unified memory; `fit` finds the most that fits.
#[test]
fn plan_cli_splits_offloaded_layers_between_gpu_and_host() {
    let run = |args: &[&str]| plan_summary(args)["offload"][0].clone();
    let base = [
        "llama-3.1-8b",
        "--hardware",
        "rtx-4090",
        "--precision",
        "q4_k_m",
        "--context",
        "8192",
    ];
    let none = run(&[&base[..], &["--gpu-layers", "0"]].concat());
    let all = run(&[&base[..], &["--gpu-layers", "all"]].concat());
    let some = run(&[&base[..], &["--gpu-layers", "17"]].concat());
    let n = |v: &serde_json::Value, k: &str| v["split"][k].as_u64().unwrap();
    // -ngl 0 on a GPU build: weights and KV on the host, the compute
    // buffer still on the GPU (op_offload).
    assert_eq!(n(&none, "weights_device_bytes"), 0, "{none}");
    assert_eq!(n(&none, "kv_device_bytes"), 0, "{none}");
    assert!(n(&none, "compute_device_bytes") > 0, "{none}");
    assert_eq!(n(&all, "layers_on_device"), 32, "{all}");
    assert_eq!(all["split"]["output_on_device"], true);
    assert!(n(&some, "device_bytes") > 0 && n(&some, "device_bytes") < n(&all, "device_bytes"));
    assert!(n(&some, "host_bytes") < n(&none, "host_bytes"));
    // The embedding table stays in host memory even with everything offloaded.
    assert!(n(&all, "host_bytes") >= n(&all, "embedding_bytes") && n(&all, "embedding_bytes") > 0);
    assert_eq!(
        all["fit"]["fits"], true,
        "an 8B Q4_K_M fits a 24 GB GPU: {all}"
    );
    // A 70B model on the same GPU: all of it does not fit, `fit` finds what does.
    let big = [
        "llama-3.1-70b",
        "--hardware",
        "rtx-4090",
        "--precision",
        "q4_k_m",
        "--context",
        "8192",
    ];
    let all70 = run(&[&big[..], &["--gpu-layers", "all"]].concat());
    assert_eq!(all70["fit"]["fits"], false, "{all70}");
    let fit = run(&[&big[..], &["--gpu-layers", "fit"]].concat());
    assert_eq!(fit["fit"]["fits"], true, "{fit}");
    let most = fit["most_gpu_layers_that_fit"].as_u64().unwrap();
    assert!(most > 0 && most < 81, "{fit}");
    assert_eq!(fit["split"]["gpu_layers"].as_u64().unwrap(), most);
    // On unified memory (GB10) device and host share one budget.
    let gb10 = run(&[
        "llama-3.1-70b",
        "--hardware",
        "gb10",
        "--precision",
        "q4_k_m",
        "--gpu-layers",
        "all",
    ]);
    assert_eq!(gb10["fit"]["fits"], true, "{gb10}");
    // Only llama.cpp engines take -ngl; a bad value names the flag.
    let out = std::process::Command::new(aula_exe())
        .args([
            "plan",
            "llama-3.1-8b",
            "--engine",
            "vllm",
            "--gpu-layers",
            "3",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--gpu-layers"));
    let out = std::process::Command::new(aula_exe())
        .args(["plan", "llama-3.1-8b", "--gpu-layers", "most"])
        .output()
        .unwrap();
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("--gpu-layers `most`")
    );
}

#[test]
fn plan_cli_takes_vllm_versions_drafts_and_llama_cpp_generations() {
    let base = [
        "llama-3.1-8b",
        "--hardware",
        "h100-sxm",
        "--engine",
        "vllm",
        "--context",
        "20000",
    ];
    let v1 = plan_json(&base);
    let v0 = plan_json(&[&base[..], &["--engine-version", "v0"]].concat());
    // V1 profiles max_num_batched_tokens; V0 (no chunked prefill) a batch of max_model_len.
    assert_eq!(v1["vllm"]["engine_version"], "v1");
    assert_eq!(v1["vllm"]["profiled_tokens"], 8192);
    assert_eq!(v0["vllm"]["engine_version"], "v0");
    assert_eq!(v0["vllm"]["profiled_tokens"], 20000);
    assert!(
        v0["vllm"]["kv_blocks"].as_u64() < v1["vllm"]["kv_blocks"].as_u64(),
        "{v0}\n{v1}"
    );
    // A draft head's layers take KV from the same pool.
    let eagle = plan_json(&[&base[..], &["--draft-layers", "1"]].concat());
    assert!(eagle["vllm"]["draft_kv_bytes_per_token"].as_f64().unwrap() > 0.0);
    assert!(eagle["vllm"]["kv_tokens"].as_u64() < v1["vllm"]["kv_tokens"].as_u64());
    // A llama.cpp estimate says which generation it assumes, with a range.
    let q = plan_json(&[
        "llama-3.1-8b",
        "--hardware",
        "rtx-4090",
        "--precision",
        "q4_k_m",
    ]);
    assert_eq!(
        q["speed"]["decode_model"]["llama_cpp_generation"], "2025",
        "{}",
        q["speed"]
    );
    let r = &q["speed"]["single_stream_range"];
    let mid = q["speed"]["single_stream_tokens_per_s"].as_f64().unwrap();
    assert!(
        r["low_tokens_per_s"].as_f64().unwrap() < mid
            && mid < r["high_tokens_per_s"].as_f64().unwrap(),
        "{r}"
    );
    let out = std::process::Command::new(aula_exe())
        .args(["plan", "llama-3.1-8b", "--llama-cpp-generation", "1999"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown generation `1999`"));
}

/// The offload split against what llama.cpp's Vulkan backend allocated on
/// Mesa's lavapipe for SmolLM2 (context 1024, one slot; scripts/vulkan-check.sh,
/// 2026-12-02, BENCHMARKS.md): the device's model, KV and compute buffers at
/// -ngl all, 15 and 0, in bytes as `/health` reported them. Weights and KV
/// are exact (the GGUF's own tensor sizes: a Q8_0 embedding table beside
/// Q4_1 layers); the compute buffer within 5%.
#[test]
fn plan_offload_matches_vulkan_buffers_measured() {
    let measured: [(&str, u64, u64, u64); 3] = [
        ("all", 96_573_850, 23_592_960, 106_451_436),
        ("15", 61_111_009, 11_010_048, 105_381_888),
        ("0", 0, 0, 135_465_533),
    ];
    let model = model_path(SMOL_FILE);
    for (ngl, weights, kv, compute) in measured {
        let o = plan_summary(&[
            model.to_str().unwrap(),
            "--context",
            "1024",
            "--users",
            "1",
            "--gpu-layers",
            ngl,
        ])["offload"][0]
            .clone();
        let n = |k: &str| o["split"][k].as_u64().unwrap() as f64;
        let near = |planned: f64, real: u64, tol: f64| {
            (planned - real as f64).abs() <= tol * (real as f64).max(1.0)
        };
        assert!(
            near(n("weights_device_bytes"), weights, 0.01),
            "-ngl {ngl}: {o}"
        );
        assert!(near(n("kv_device_bytes"), kv, 0.01), "-ngl {ngl}: {o}");
        assert!(
            near(n("compute_device_bytes"), compute, 0.05),
            "-ngl {ngl}: {o}"
        );
    }
}
