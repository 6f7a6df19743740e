//! Several embedded models in one memory budget: loaded on demand, evicted
//! only when idle, stopped after keep_alive, operated with aula ps / load /
//! unload. Real engines (Gemma 3 270M under two names).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;
use common::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Two names for the same Gemma file, each planned at about 0.8 GB
/// (512 tokens, 1 slot); a budget of 1.2 GB holds one of them.
fn two_gemmas(tag: &str, extra_b: &str, budget_gb: f64) -> TempHome {
    let home = temp_home(tag);
    let g = model_path(GEMMA_FILE);
    std::fs::write(
        home.join("aula.toml"),
        format!(
            "[machine]\nmemory_gb = {budget_gb}\nload_timeout_seconds = 60\n\n\
             [[models]]\nname = \"a\"\ngguf = \"{g}\"\ncontext = 512\nparallel = 1\n\n\
             [[models]]\nname = \"b\"\ngguf = \"{g}\"\ncontext = 512\nparallel = 1\n{extra_b}\n",
            g = g.display()
        ),
    )
    .unwrap();
    home
}

fn ps(home: &std::path::Path, url: &str) -> Value {
    let (ok, out, err) = run_aula(&["ps", "--url", url, "--json"], home);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn state(v: &Value, model: &str) -> String {
    v["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == model)
        .map(|m| m["state"].as_str().unwrap().to_string())
        .unwrap()
}

fn completion(model: &str, max_tokens: u32) -> Value {
    json!({"model": model, "prompt": "Once upon a time", "max_tokens": max_tokens, "temperature": 0})
}

#[test]
fn one_budget_two_models_evict_only_when_idle() {
    let home = two_gemmas("fleet", "", 1.2);
    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    let url = format!("{}/v1/completions", s.url);
    wait_for("a to load", Duration::from_secs(60), || {
        state(&ps(&home, &s.url), "a") == "ready"
    });
    assert_eq!(
        state(&ps(&home, &s.url), "b"),
        "unloaded",
        "b does not fit beside a"
    );

    // A long streamed request on a; b is asked for meanwhile. b must wait:
    // a is not evicted while its request runs.
    let a_stream = {
        let url = url.clone();
        std::thread::spawn(move || {
            let mut b = completion("a", 120);
            b["stream"] = json!(true);
            let t = Instant::now();
            let r = stream(&url, &b);
            (r.done, r.text, t.elapsed())
        })
    };
    // b is asked for once a's request runs (an event, not a delay).
    wait_for("a's request to run", Duration::from_secs(120), || {
        ps(&home, &s.url)["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["model"] == "a" && m["active_requests"].as_u64().unwrap_or(0) > 0)
    });
    let t = Instant::now();
    let rb = post(&url, &completion("b", 4));
    let b_waited = t.elapsed();
    let (a_done, a_text, a_took) = a_stream.join().unwrap();
    assert!(a_done && !a_text.is_empty(), "a's request was cut off");
    assert_eq!(rb.status, 200, "{}", rb.text);
    assert!(
        b_waited + Duration::from_millis(300) >= a_took,
        "b ({b_waited:?}) did not wait for a's request ({a_took:?})"
    );
    let v = ps(&home, &s.url);
    assert_eq!(
        (state(&v, "a").as_str(), state(&v, "b").as_str()),
        ("unloaded", "ready"),
        "{v}"
    );

    // Three requests for a at once while it loads: none fails because of the load.
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || post(&url, &completion("a", 3)).status)
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    // Operated by hand.
    let (ok, out, err) = run_aula(&["unload", "a", "--url", &s.url], &home);
    assert!(ok && out.contains("unloaded"), "{err}");
    let (ok, out, err) = run_aula(&["load", "b", "--url", &s.url], &home);
    assert!(ok && out.contains("ready"), "{err}");
    let v = ps(&home, &s.url);
    let b = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "b")
        .unwrap()
        .clone();
    let planned = b["planned_bytes"].as_f64().unwrap();
    let actual = b["actual_bytes"].as_f64().unwrap();
    assert!(
        (actual - planned).abs() / planned < 0.10,
        "planned {planned} vs actual {actual}"
    );
    // Where it lives, per llama.cpp buffer type: on this CPU build all of
    // it in host buffers (`CPU`, `CPU_Mapped` — the file's pages —,
    // `CPU_REPACK` or `AMX` — weights repacked for the CPU's kernels, which
    // can overlap the mapped pages), nothing offloaded.
    let where_: u64 = b["device_bytes"]
        .as_object()
        .unwrap_or_else(|| panic!("{b}"))
        .iter()
        .map(|(name, v)| {
            assert!(name.starts_with("CPU") || name == "AMX", "{b}");
            v.as_u64().unwrap()
        })
        .sum();
    assert!(where_ as f64 > 0.5 * actual, "{b}");
    assert!(
        b["layers_offloaded"].is_null() || b["layers_offloaded"][0] == 0,
        "{b}"
    );
    let (ok, out, _) = run_aula(&["ps", "--url", &s.url], &home);
    assert!(
        ok && out.lines().next().unwrap().ends_with("where"),
        "{out}"
    );
    assert!(out.contains(" CPU"), "{out}");
    drop(s);
}

#[test]
fn keep_alive_failed_loads_and_impossible_pins() {
    let home = two_gemmas("fleet2", "keep_alive = \"2s\"\npreload = false", 4.0);
    // A third model whose file is not a model: its load fails with the reason.
    let bad = home.join("models").join("broken.gguf");
    std::fs::write(&bad, b"GGUF\x03\x00\x00\x00 not really").unwrap();
    let mut cfg = std::fs::read_to_string(home.join("aula.toml")).unwrap();
    cfg.push_str(&format!(
        "\n[[models]]\nname = \"broken\"\ngguf = \"{}\"\npreload = false\n",
        bad.display()
    ));
    std::fs::write(home.join("aula.toml"), &cfg).unwrap();
    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    let url = format!("{}/v1/completions", s.url);
    assert_eq!(
        state(&ps(&home, &s.url), "b"),
        "unloaded",
        "preload = false"
    );
    assert_eq!(post(&url, &completion("b", 2)).status, 200);
    wait_for(
        "b to be stopped after its keep_alive",
        Duration::from_secs(15),
        || state(&ps(&home, &s.url), "b") == "unloaded",
    );
    let r = post(&url, &completion("broken", 2));
    assert_eq!(r.status, 503, "{}", r.text);
    let msg = r.body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("broken") && msg.contains("could not be loaded"),
        "{msg}"
    );
    assert_eq!(
        post(&url, &completion("a", 2)).status,
        200,
        "the others keep serving"
    );
    drop(s);

    // Pinned models that can never fit stop start-up with the plan's figures.
    let home2 = two_gemmas("fleet3", "pinned = true", 1.2);
    let cfg = std::fs::read_to_string(home2.join("aula.toml"))
        .unwrap()
        .replace("name = \"a\"\n", "name = \"a\"\npinned = true\n");
    std::fs::write(home2.join("aula.toml"), cfg).unwrap();
    let (ok, _, err) = run_aula(&["serve", "--port", "0"], &home2);
    assert!(
        !ok && err.contains("pinned models need") && err.contains("memory_gb"),
        "{err}"
    );
}

/// A stand-in for an engine program: records its arguments, says something
/// on stderr (for the log), then serves the OpenAI API with openai-mock on
/// the port it was given.
fn stand_in(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let args = dir.join(format!("{name}.args"));
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{args}'\necho \"stand-in {name} starting\" >&2\nport=''\nprev=''\nfor a in \"$@\"; do\n  if [ \"$prev\" = '--port' ]; then port=\"$a\"; fi\n  prev=\"$a\"\ndone\nexec '{mock}' \"$port\"\n",
            args = args.display(),
            mock = mock_exe().display()
        ),
    )
    .unwrap();
    let mut perm = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&path, perm).unwrap();
    path
}

#[test]
fn external_engines_get_planned_arguments_restarts_and_logs() {
    let home = temp_home("external");
    let bin = home.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let vllm = stand_in(&bin, "vllm");
    let llama_server = stand_in(&bin, "llama-server");
    // A Hugging Face model directory: config.json only (the planner needs no weights).
    let hf = home.join("models").join("Llama-3.2-1B");
    std::fs::create_dir_all(&hf).unwrap();
    std::fs::write(
        hf.join("config.json"),
        r#"{"model_type": "llama", "num_hidden_layers": 16, "hidden_size": 2048, "num_attention_heads": 32,
            "num_key_value_heads": 8, "head_dim": 64, "intermediate_size": 8192, "vocab_size": 128256,
            "max_position_embeddings": 131072, "tie_word_embeddings": true, "torch_dtype": "bfloat16"}"#,
    )
    .unwrap();
    std::fs::write(
        home.join("aula.toml"),
        format!(
            "[machine]\nmemory_gb = 24\n\n\
             [[models]]\nname = \"fake-vllm\"\nengine = \"vllm\"\nmodel = \"Llama-3.2-1B\"\ncommand = \"{}\"\ncontext = 4096\nparallel = 8\n\n\
             [[models]]\nname = \"fake-llama\"\nengine = \"llama-server\"\ngguf = \"{}\"\ncommand = \"{}\"\ncontext = 1024\nparallel = 2\n",
            vllm.display(),
            model_path(GEMMA_FILE).display(),
            llama_server.display()
        ),
    )
    .unwrap();
    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    let url = format!("{}/v1/chat/completions", s.url);
    wait_for(
        "both stand-ins to be ready",
        Duration::from_secs(30),
        || {
            let v = ps(&home, &s.url);
            state(&v, "fake-vllm") == "ready" && state(&v, "fake-llama") == "ready"
        },
    );
    for m in ["fake-vllm", "fake-llama"] {
        let r = post(&url, &chat_body(m, "hi", 4));
        assert_eq!(r.status, 200, "{m}: {}", r.text);
    }
    // What the engine process really uses (its resident memory, here a few MB
    // for the stand-in) is measured and shown beside the plan.
    let v = ps(&home, &s.url);
    let fv = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "fake-vllm")
        .unwrap()
        .clone();
    // `aula ps --json` names each model's real engine kind.
    let kind = |m: &str| {
        v["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["model"] == m)
            .unwrap()["engine"]
            .clone()
    };
    assert_eq!(kind("fake-vllm"), "vllm", "{v}");
    assert_eq!(kind("fake-llama"), "llama-server", "{v}");
    let actual = fv["actual_bytes"].as_u64().unwrap_or(0);
    assert!(
        actual > 1_000_000 && actual < fv["planned_bytes"].as_u64().unwrap(),
        "{fv}"
    );
    let vargs = std::fs::read_to_string(bin.join("vllm.args")).unwrap();
    assert!(
        vargs.starts_with(&format!("serve {}", hf.display())),
        "{vargs}"
    );
    for want in [
        "--host 127.0.0.1",
        "--served-model-name fake-vllm",
        "--max-model-len 4096",
        "--max-num-seqs 8",
        "--gpu-memory-utilization 0.",
    ] {
        assert!(vargs.contains(want), "{want} not in {vargs}");
    }
    // Its share: 1.24B parameters at bf16 (2.5 GB) + KV for 8 x 4096 tokens
    // (1.1 GB) + activations and overhead, of 24 GB: about 0.2.
    let share: f64 = vargs
        .split("--gpu-memory-utilization ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((0.15..0.30).contains(&share), "{share}");
    let largs = std::fs::read_to_string(bin.join("llama-server.args")).unwrap();
    for want in ["-m ", "--alias fake-llama", "-c 2048", "-np 2", "-ngl 999"] {
        assert!(largs.contains(want), "{want} not in {largs}");
    }
    // The engine crashes: Aula restarts it with the same arguments.
    let pids = children_of(s.pid());
    assert_eq!(pids.len(), 2, "{pids:?}");
    for p in &pids {
        unsafe {
            libc::kill(*p as i32, libc::SIGKILL);
        }
    }
    wait_for("the restarted engines", Duration::from_secs(30), || {
        post(&url, &chat_body("fake-vllm", "hi", 4)).status == 200
            && post(&url, &chat_body("fake-llama", "hi", 4)).status == 200
    });
    assert_eq!(
        std::fs::read_to_string(bin.join("vllm.args"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    let log = std::fs::read_to_string(home.join("logs").join("engine-fake-vllm.log")).unwrap();
    assert!(log.contains("stand-in vllm starting"), "{log}");
    drop(s);
}

#[test]
fn url_replicas_are_balanced_health_checked_and_aliased() {
    // 4 tokens x 200 ms: the eight requests below are all under way at once
    // (however busy the machine), so the least-loaded pick spreads them.
    let one = spawn_mock(200);
    let mut two = spawn_mock(200);
    let home = temp_home("replicas");
    std::fs::write(
        home.join("aula.toml"),
        format!(
            "[[models]]\nname = \"chat\"\naliases = [\"default\", \"gpt-4o-mini\"]\nupstream_model = \"org/chat-model-v2\"\nurl = [\"{}\", \"{}/v1\"]\nparallel = 4\n",
            one.url, two.url
        ),
    )
    .unwrap();
    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    let url = format!("{}/v1/chat/completions", s.url);
    let models = get(&format!("{}/v1/models", s.url));
    let ids: Vec<&str> = models.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["chat", "default", "gpt-4o-mini"]);
    // Eight at once: both replicas get work.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                post(
                    &url,
                    &chat_body(if i % 2 == 0 { "chat" } else { "default" }, "hi", 4),
                )
            })
        })
        .collect();
    for t in threads {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text);
        // The engine was asked for the name it knows.
        assert_eq!(r.body["model"], "org/chat-model-v2");
    }
    let served = |m: &Proc| {
        get(&format!("{}/stats", m.url)).body["served"]
            .as_u64()
            .unwrap()
    };
    assert!(
        served(&one) >= 2 && served(&two) >= 2,
        "{} / {}",
        served(&one),
        served(&two)
    );
    // One replica dies: at most one request notices, the rest go to the other.
    let _ = two.child.kill();
    let _ = two.child.wait();
    let ok = (0..10)
        .filter(|_| post(&url, &chat_body("gpt-4o-mini", "hi", 4)).status == 200)
        .count();
    assert!(ok >= 9, "{ok} of 10 succeeded with one replica down");
    let (ok_usage, out, err) = run_aula(&["usage", "--by", "model", "--json"], &home);
    assert!(ok_usage, "{err}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        rows[0]["key"], "chat",
        "aliases are recorded under the model's name: {rows}"
    );
    drop(s);
}

#[test]
fn replicas_of_a_started_engine_share_the_load() {
    let home = temp_home("engine-replicas");
    let g = model_path(GEMMA_FILE);
    std::fs::write(
        home.join("aula.toml"),
        format!(
            "[machine]\nmemory_gb = 8\n\n[[models]]\nname = \"g\"\ngguf = \"{}\"\ncontext = 256\nparallel = 1\nreplicas = 2\n",
            g.display()
        ),
    )
    .unwrap();
    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    let url = format!("{}/v1/completions", s.url);
    wait_for("g to load", Duration::from_secs(60), || {
        state(&ps(&home, &s.url), "g") == "ready"
    });
    let engines = children_of(s.pid());
    assert_eq!(engines.len(), 2, "two engine processes: {engines:?}");
    let v = ps(&home, &s.url);
    assert_eq!(v["models"][0]["slots"], 2, "{v}");
    // CPU time of each engine process, from /proc (clock ticks).
    let cpu = |pid: u32| -> u64 {
        let s = aula_fleet::host::stat(pid).unwrap();
        s.utime + s.stime
    };
    let before: Vec<u64> = engines.iter().map(|p| cpu(*p)).collect();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || post(&url, &completion("g", 24)).status)
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    // Both engines worked (one slot each, four requests at once).
    for (i, p) in engines.iter().enumerate() {
        let used = cpu(*p) - before[i];
        assert!(used >= 3, "engine {p} used {used} ticks: it served nothing");
    }
    for f in ["engine-g.log", "engine-g.r1.log"] {
        assert!(home.join("logs").join(f).exists(), "{f}");
    }
    drop(s);
}
