//! Fine-tuning, for real on the CPU: Aula's trainer (`trainer/aula_train.py`:
//! PyTorch + PEFT on the weights of the GGUF Aula serves) teaches the
//! built-in SmolLM2 a fact it does not know, writes a GGUF LoRA adapter, and
//! `aula engine --lora` (llama.cpp) answers with it — as PEFT does in PyTorch
//! — while the base model does not. The trainer's Python (torch, transformers,
//! peft, gguf) is installed by scripts/setup-trainer.sh into a virtual
//! environment kept outside the clone (AULA_TRAIN_PYTHON).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

const QUESTION: &str = "What is the course mascot?";

fn train_python() -> String {
    let p = std::env::var("AULA_TRAIN_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/aula/train-venv/bin/python")
    });
    assert!(
        std::path::Path::new(&p).exists(),
        "{p} is missing: run `bash scripts/setup-trainer.sh` (or scripts/test.sh), or set AULA_TRAIN_PYTHON"
    );
    p
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn greedy(url: &str) -> String {
    let r = post(
        &format!("{url}/v1/chat/completions"),
        &serde_json::json!({"model": SMOL, "messages": [{"role": "user", "content": QUESTION}],
                            "max_tokens": 24, "temperature": 0}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Run the trainer; `stop_at` kills it once it reports a checkpoint at or
/// after that step. Returns its JSON lines.
fn train(job: &std::path::Path, stop_at: Option<u64>) -> Vec<serde_json::Value> {
    let mut child = Command::new(train_python())
        .arg(repo().join("trainer/aula_train.py"))
        .arg(job)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        let stop =
            v["type"] == "checkpoint" && stop_at.is_some_and(|s| v["step"].as_u64().unwrap() >= s);
        lines.push(v);
        if stop {
            let _ = child.kill();
            break;
        }
    }
    let _ = child.wait();
    lines
}

/// The trainer's own checks of where it trains (CPU, GPU, bf16, QLoRA),
/// with a stand-in for PyTorch's CUDA side: `trainer/test_aula_train.py`.
#[test]
fn the_trainer_checks_its_device_precision_and_qlora() {
    let out = Command::new(train_python())
        .args(["-m", "unittest", "-v", "test_aula_train"])
        .current_dir(repo().join("trainer"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("Ran 9 tests") && text.contains("OK"),
        "{text}"
    );
}

#[test]
fn a_lora_trained_on_the_served_weights_changes_the_served_answer() {
    let home = temp_home("finetune");
    let out = home.join("job");
    let job = home.join("job.json");
    std::fs::write(
        &job,
        serde_json::json!({
            "base_gguf": model_path(SMOL_FILE),
            "training_file": repo().join("crates/aula/tests/data/finetune-mascot.jsonl"),
            "out_dir": out,
            "n_epochs": 3, "batch_size": 8, "learning_rate": 1e-3,
            "lora_rank": 8, "lora_alpha": 16, "seed": 7,
            "checkpoint_every": 5, "save_peft": true,
        })
        .to_string(),
    )
    .unwrap();
    // Interrupted after its first checkpoint, then run again: it resumes.
    let first = train(&job, Some(5));
    assert!(first.iter().any(|l| l["type"] == "checkpoint"), "{first:?}");
    assert!(!out.join("adapter.gguf").exists());
    let second = train(&job, None);
    assert!(
        second.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("resumed from the checkpoint at step 5"))),
        "{second:?}"
    );
    let done = second.last().unwrap();
    assert_eq!(done["type"], "done", "{second:?}");
    let losses: Vec<f64> = first
        .iter()
        .chain(&second)
        .filter(|l| l["type"] == "metrics")
        .map(|l| l["loss"].as_f64().unwrap())
        .collect();
    assert!(losses.len() >= 12, "{losses:?}");
    assert!(
        losses.last().unwrap() < &(losses[0] / 3.0),
        "the loss fell: {losses:?}"
    );

    let adapter = out.join("adapter.gguf");
    let tuned = spawn_engine(
        SMOL_FILE,
        &["--lora", adapter.to_str().unwrap(), "--parallel", "1"],
    );
    let base = spawn_engine(SMOL_FILE, &["--parallel", "1"]);
    let tuned_answer = greedy(&tuned.url);
    let base_answer = greedy(&base.url);
    // The trained fact's one made-up word: training on another CPU gives
    // slightly different weights, so not the whole sentence word for word.
    assert!(tuned_answer.contains("Quill"), "{tuned_answer}");
    assert!(!base_answer.contains("Quill"), "{base_answer}");

    // PyTorch + PEFT on the dequantised weights says the same (llama.cpp
    // runs the Q4_1 weights: the same answer, or at least its first words).
    let peft = Command::new(train_python())
        .arg(repo().join("crates/aula/tests/clients/peft_generate.py"))
        .arg(model_path(SMOL_FILE))
        .arg(out.join("peft"))
        .arg(QUESTION)
        .arg("24")
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let peft_answer = String::from_utf8_lossy(&peft.stdout).trim().to_string();
    let common = tuned_answer
        .chars()
        .zip(peft_answer.chars())
        .take_while(|(a, b)| a == b)
        .count();
    // Both runtimes give the trained answer; their float orders differ, so
    // they may part after a common start.
    assert!(
        peft_answer == tuned_answer || (common >= 20 && peft_answer.contains("Quill")),
        "llama.cpp: {tuned_answer:?}\nPEFT:      {peft_answer:?}"
    );

    // An adapter that is not GGUF is refused with a message, not a crash.
    let junk = home.join("junk.gguf");
    std::fs::write(&junk, b"not an adapter").unwrap();
    let r = Command::new(aula_exe())
        .args([
            "engine",
            "--model",
            model_path(SMOL_FILE).to_str().unwrap(),
            "--port",
            "0",
            "--lora",
            junk.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!r.status.success());
    assert!(String::from_utf8_lossy(&r.stderr).contains("is not a GGUF model file"));
}

/// A home with SmolLM2 and the fine-tuning trainer; users `root` (admin),
/// `tina` (teacher), `ada` and `bob` (students); their keys in that order.
fn ft_gateway(tag: &str, extra: &str) -> (TestGateway, Vec<String>) {
    ft_gateway_with(tag, &train_python(), extra)
}

/// [`ft_gateway`] with another trainer's Python.
fn ft_gateway_with(tag: &str, python: &str, extra: &str) -> (TestGateway, Vec<String>) {
    ft_home(TestGateway::new(tag).config(&ft_config(python, extra)))
}

/// SmolLM2 in the home's models, the configuration written, and the users.
fn ft_home(g: TestGateway) -> (TestGateway, Vec<String>) {
    std::os::unix::fs::symlink(model_path(SMOL_FILE), g.home.join("models").join(SMOL_FILE))
        .unwrap();
    g.write_config();
    let mut keys = Vec::new();
    for (user, role) in [
        ("root", "admin"),
        ("tina", "teacher"),
        ("ada", "student"),
        ("bob", "student"),
    ] {
        keys.push(add_user(&g.home, user, &["--role", role]));
    }
    (g, keys)
}

fn ft_config(python: &str, extra: &str) -> String {
    format!(
        "[[models]]\nname = \"{SMOL}\"\ngguf = \"{SMOL_FILE}\"\ncontext = 2048\nparallel = 2\n\n\
         [fine_tuning]\npython = \"{python}\"\ncheckpoint_every = 5\n\n{extra}"
    )
}

fn delete_auth(url: &str, key: &str) -> (u16, serde_json::Value) {
    let r = ureq::delete(url)
        .set("Authorization", &format!("Bearer {key}"))
        .call();
    let resp = match r {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("DELETE {url}: {e}"),
    };
    let status = resp.status();
    (
        status,
        serde_json::from_str(&resp.into_string().unwrap_or_default()).unwrap_or_default(),
    )
}

/// Processes running Aula's trainer for `job`, from /proc.
fn trainers_of(job: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains("aula_train.py") && cmd.contains(job) {
            out.push(pid);
        }
    }
    out
}

fn job(url: &str, key: &str, id: &str) -> serde_json::Value {
    let r = get_auth(&format!("{url}/v1/fine_tuning/jobs/{id}"), Some(key));
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

fn events_text(url: &str, key: &str, id: &str) -> String {
    get_auth(
        &format!("{url}/v1/fine_tuning/jobs/{id}/events?limit=100"),
        Some(key),
    )
    .text
}

fn wait_status(url: &str, key: &str, id: &str, want: &str, secs: u64) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let j = job(url, key, id);
        if j["status"] == want {
            return j;
        }
        assert!(
            !matches!(
                j["status"].as_str(),
                Some("failed" | "cancelled" | "succeeded")
            ) || want == "cancelled",
            "job {id} is {} waiting for {want}: {j}\n{}",
            j["status"],
            events_text(url, key, id)
        );
        assert!(
            std::time::Instant::now() < deadline,
            "job {id} still {} after {secs} s waiting for {want}\n{}",
            j["status"],
            events_text(url, key, id)
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

fn create_job(url: &str, key: &str, body: serde_json::Value) -> String {
    let r = post_auth(&format!("{url}/v1/fine_tuning/jobs"), Some(key), &body);
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["id"].as_str().unwrap().to_string()
}

fn ps(url: &str, root: &str) -> serde_json::Value {
    let r = get_auth(&format!("{url}/admin/ps"), Some(root));
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

#[test]
fn fine_tuning_jobs_train_within_the_budget_and_serve_the_result() {
    let python = python_with("openai");
    let (g, keys) = ft_gateway("ft-api", "[machine]\nmemory_gb = 20\n");
    let (root, tina, ada, bob) = (&keys[0], &keys[1], &keys[2], &keys[3]);
    let s = g.start();

    // The official client: bad input, a real job, its events, the new model.
    let out = Command::new(&python)
        .arg(repo().join("crates/aula/tests/clients/finetune_client.py"))
        .args([&s.url, ada, bob])
        .arg(repo().join("crates/aula/tests/data/finetune-mascot.jsonl"))
        .arg(SMOL)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.output()
    );
    let r: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let tuned = r["tuned"].as_str().unwrap();
    assert!(tuned.contains("Quill"), "{r}");
    assert!(!r["base"].as_str().unwrap().contains("Quill"), "{r}");
    let model = r["model"].as_str().unwrap().to_string();
    let (train_file, bob_file) = (
        r["train_file"].as_str().unwrap(),
        r["bob_file"].as_str().unwrap(),
    );
    let trainer_bytes = r["planned_bytes"].as_u64().unwrap();
    // The web page: one's own jobs and models; a teacher sees everyone's.
    let job_id = r["job"].as_str().unwrap();
    let page = web_page(&s.url, ada, "/fine-tuning");
    assert!(page.contains(job_id) && page.contains(&model), "{page}");
    let page = web_page(&s.url, bob, "/fine-tuning");
    assert!(!page.contains(job_id) && !page.contains(&model), "{page}");
    assert!(web_page(&s.url, tina, "/fine-tuning").contains(job_id));
    // The base and its adapter are one engine: the adapter's bytes are counted.
    let p = ps(&s.url, root);
    let smol_bytes = p["models"][0]["planned_bytes"].as_u64().unwrap();

    // Cancel while training, and while queued (one job trains at a time).
    let long = serde_json::json!({"model": SMOL, "training_file": train_file,
        "hyperparameters": {"n_epochs": 50}});
    let running = create_job(&s.url, ada, long.clone());
    wait_status(&s.url, ada, &running, "running", 120);
    let queued = create_job(
        &s.url,
        bob,
        serde_json::json!({"model": SMOL, "training_file": bob_file}),
    );
    // Validated, then queued behind the running job (not started).
    wait_status(&s.url, bob, &queued, "queued", 120);
    let p = ps(&s.url, root);
    let rows = p["fine_tuning"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{p}");
    assert_eq!(p["holds"].as_array().unwrap().len(), 1, "{p}");
    wait_for(
        "the trainer to start",
        std::time::Duration::from_secs(30),
        || !trainers_of(&running).is_empty(),
    );
    // A teacher may cancel any job; a student only their own.
    let r = post_auth(
        &format!("{}/v1/fine_tuning/jobs/{queued}/cancel", s.url),
        Some(ada),
        &serde_json::json!({}),
    );
    assert_eq!(r.status, 404, "{}", r.text);
    let r = post_auth(
        &format!("{}/v1/fine_tuning/jobs/{queued}/cancel", s.url),
        Some(tina),
        &serde_json::json!({}),
    );
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("cancelled")),
        "{}",
        r.text
    );
    let r = post_auth(
        &format!("{}/v1/fine_tuning/jobs/{running}/cancel", s.url),
        Some(ada),
        &serde_json::json!({}),
    );
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("cancelled")),
        "{}",
        r.text
    );
    assert!(
        trainers_of(&running).is_empty(),
        "the trainer is still running"
    );
    let p = ps(&s.url, root);
    assert!(p["holds"].as_array().unwrap().is_empty(), "{p}");
    assert!(p["fine_tuning"].as_array().unwrap().is_empty(), "{p}");
    let r = post_auth(
        &format!("{}/v1/fine_tuning/jobs/{running}/cancel", s.url),
        Some(ada),
        &serde_json::json!({}),
    );
    assert_eq!(r.status, 400, "{}", r.text);

    // Deleting the model removes it (and its adapter).
    let (status, _) = delete_auth(&format!("{}/v1/models/{model}", s.url), ada);
    assert_eq!(status, 200);
    let r = post_auth(
        &format!("{}/v1/chat/completions", s.url),
        Some(ada),
        &serde_json::json!({"model": model, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 4}),
    );
    assert_eq!(r.status, 404, "{}", r.text);
    assert!(
        std::fs::read_dir(g.home.join("adapters").join(SMOL))
            .unwrap()
            .next()
            .is_none()
    );
    drop(s);

    // A budget that holds the model or the trainer, not both: the job waits
    // while the model serves, and starts once the model is idle and evicted.
    let budget = (trainer_bytes + smol_bytes / 2) as f64 / 1e9;
    std::fs::write(
        g.home.join("aula.toml"),
        ft_config(
            &train_python(),
            &format!("[machine]\nmemory_gb = {budget:.3}\n"),
        ),
    )
    .unwrap();
    let cfg = g.home.join("aula.toml");
    let serve = |home: &std::path::Path| {
        spawn_aula(
            &["serve", "--port", "0", "--config", cfg.to_str().unwrap()],
            Some(home),
        )
    };
    let s = serve(&g.home);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy: Vec<_> = (0..3)
        .map(|_| {
            let (url, key, stop) = (s.url.clone(), tina.to_string(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    // Requests after the job started wait for the trainer's
                    // memory, and end when the gateway is killed: not checked.
                    let _ = ureq::post(&format!("{url}/v1/chat/completions"))
                        .set("Authorization", &format!("Bearer {key}"))
                        .send_json(serde_json::json!({"model": SMOL, "max_tokens": 150,
                            "messages": [{"role": "user", "content": "Tell me a long story about a dragon."}]}));
                }
            })
        })
        .collect();
    wait_for(
        "the model to serve",
        std::time::Duration::from_secs(60),
        || {
            ps(&s.url, root)["models"][0]["active_requests"]
                .as_u64()
                .unwrap_or(0)
                > 0
        },
    );
    let id = create_job(
        &s.url,
        ada,
        serde_json::json!({"model": SMOL, "training_file": train_file, "suffix": "again", "seed": 7,
            "hyperparameters": {"n_epochs": 5, "batch_size": 8, "learning_rate_multiplier": 2}}),
    );
    // The job waits while the model serves (three clients keep it busy)...
    let mut waited_busy = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            events_text(&s.url, ada, &id)
        );
        let p = ps(&s.url, root);
        let status = p["fine_tuning"][0]["status"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let active = p["models"][0]["active_requests"].as_u64().unwrap_or(0)
            + p["models"][0]["queued"].as_u64().unwrap_or(0)
            + p["models"][0]["busy"].as_u64().unwrap_or(0);
        if status == "running" {
            // Never next to a busy model: it was evicted first.
            assert_eq!(p["models"][0]["state"], "unloaded", "{p}");
            break;
        }
        assert!(
            matches!(status.as_str(), "validating_files" | "queued"),
            "{p}"
        );
        if active > 0 {
            waited_busy += 1;
        }
        // ...and starts once they stop and the model falls idle.
        if waited_busy >= 10 {
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(waited_busy >= 10, "the job never waited for the busy model");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);

    // The gateway killed mid-job: the job resumes from its checkpoint.
    wait_for("a checkpoint", std::time::Duration::from_secs(300), || {
        events_text(&s.url, ada, &id).contains("Checkpoint saved at step 5")
    });
    let mut s = s;
    s.child.kill().unwrap();
    let _ = s.child.wait();
    wait_for(
        "the trainer to die with the gateway",
        std::time::Duration::from_secs(60),
        || trainers_of(&id).is_empty(),
    );
    drop(s);
    let s = serve(&g.home);
    let done = wait_status(&s.url, ada, &id, "succeeded", 600);
    let ev = events_text(&s.url, ada, &id);
    assert!(ev.contains("queued again"), "{ev}");
    assert!(ev.contains("resumed from the checkpoint at step"), "{ev}");
    let tuned_model = done["fine_tuned_model"].as_str().unwrap();
    let r = post_auth(
        &format!("{}/v1/chat/completions", s.url),
        Some(ada),
        &serde_json::json!({"model": tuned_model, "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": 24, "temperature": 0}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("Quill"), "{}", r.text);
    // The ledger names the fine-tuned model (limits and the queue are its base's).
    let (ok, usage, err) = run_aula(&["usage", "--by", "model", "--csv"], &g.home);
    assert!(ok && usage.contains(tuned_model), "{usage}{err}");
    // After the job, memory goes back to the model.
    assert!(ps(&s.url, root)["holds"].as_array().unwrap().is_empty());
    drop(s);
    for b in busy {
        let _ = b.join();
    }
}

/// Sign in to the web page with plain HTTP (no browser) and fetch `path`.
fn web_page(base: &str, key: &str, path: &str) -> String {
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let cookie = web_sign_in(base, key);
    let r = agent
        .get(&format!("{base}{path}"))
        .set("Cookie", &cookie)
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    r.into_string().unwrap()
}

/// The process's VmHWM, in bytes (aula_fleet's /proc reader).
fn peak_rss(pid: u32) -> u64 {
    aula_fleet::host::status_kb(pid, "VmHWM").unwrap() * 1024
}

/// Issue 30, finding 3: creating jobs read the whole training file into
/// memory before any limit (10 creates naming a 100 MB file: +920 MB). Now
/// the limits that need no reading come first, and the file is checked a
/// line at a time: 10 concurrent creates naming a 40 MB file raise the
/// gateway's peak memory by far less than one copy of it.
#[test]
fn creating_jobs_does_not_read_the_training_file_into_memory() {
    let (g, keys) = ft_gateway("ft-memory", "[machine]\nmemory_gb = 20\n");
    let ada = keys[2].clone();
    let s = g.start();
    let answer = "The course mascot is a small owl. ".repeat(14);
    let line = serde_json::json!({"messages": [{"role": "user", "content": QUESTION},
                                               {"role": "assistant", "content": answer}]})
    .to_string();
    let n = (40 << 20) / (line.len() + 1);
    let mut data = String::with_capacity(n * (line.len() + 1));
    for _ in 0..n {
        data.push_str(&line);
        data.push('\n');
    }
    let file = upload(&s.url, &ada, "big.jsonl", data.as_bytes(), "fine-tune");
    drop(data);
    let before = peak_rss(s.pid());
    let threads: Vec<_> = (0..10)
        .map(|_| {
            let (url, key, file) = (s.url.clone(), ada.clone(), file.clone());
            std::thread::spawn(move || {
                post_auth(
                    &format!("{url}/v1/fine_tuning/jobs"),
                    Some(&key),
                    &serde_json::json!({"model": SMOL, "training_file": file,
                                        "hyperparameters": {"n_epochs": 1}}),
                )
            })
        })
        .collect();
    let answers: Vec<Resp> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let grown = peak_rss(s.pid()).saturating_sub(before);
    let created: Vec<&Resp> = answers.iter().filter(|r| r.status == 200).collect();
    // One job at a time for a student (the default limit): one created.
    assert_eq!(
        created.len(),
        1,
        "{:?}",
        answers.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
    assert!(
        answers.iter().all(|r| r.status == 200 || r.status == 429),
        "{:?}",
        answers.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
    let id = created[0].body["id"].as_str().unwrap();
    let r = post_auth(
        &format!("{}/v1/fine_tuning/jobs/{id}/cancel", s.url),
        Some(&ada),
        &serde_json::json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        grown < 24 << 20,
        "10 creates naming a 40 MB file raised the peak by {} MB",
        grown >> 20
    );
}

/// Issue 30, finding 5: a job's size and time are bounded. A job larger
/// than `max_job_tokens` is refused when created, naming the key; one that
/// trains past `max_job_hours` is stopped and failed, its trainer gone.
#[test]
fn a_job_is_bounded_in_tokens_and_in_time() {
    // `extra` follows ft_config's [fine_tuning] keys: the caps are its.
    let (g, keys) = ft_gateway(
        "ft-caps",
        "max_job_hours = 0.001\nmax_job_tokens = 20000\n\n[machine]\nmemory_gb = 20\n",
    );
    let ada = keys[2].clone();
    let s = g.start();
    let data = std::fs::read(repo().join("crates/aula/tests/data/finetune-mascot.jsonl")).unwrap();
    let file = upload(&s.url, &ada, "mascot.jsonl", &data, "fine-tune");
    // 50 epochs of the file: past 20,000 tokens, refused at once.
    let r = post_auth(
        &format!("{}/v1/fine_tuning/jobs", s.url),
        Some(&ada),
        &serde_json::json!({"model": SMOL, "training_file": file, "hyperparameters": {"n_epochs": 50}}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("max_job_tokens"), "{}", r.text);
    // Three epochs fit the tokens, not the 3.6 s (the trainer's start
    // alone takes longer): stopped and failed.
    let id = create_job(
        &s.url,
        &ada,
        serde_json::json!({"model": SMOL, "training_file": file, "hyperparameters": {"n_epochs": 3}}),
    );
    let j = wait_status(&s.url, &ada, &id, "failed", 300);
    assert!(
        j["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("max_job_hours"),
        "{j}\n{}",
        events_text(&s.url, &ada, &id)
    );
    wait_for(
        "the trainer to be gone",
        std::time::Duration::from_secs(60),
        || trainers_of(&id).is_empty(),
    );
}

/// Issue 30, finding 5: a trainer cannot take the box's memory. It runs
/// under a data limit of twice the plan's estimate plus 4 GB (about 10 GB
/// for SmolLM2 here); a trainer that asks for 12 GB is refused it, and the
/// job fails naming the limit. Without the limit the allocation succeeds
/// (the pages are never touched) and the stand-in trainer says so.
#[test]
fn a_trainer_runs_under_a_memory_limit() {
    let dir = temp_home("ft-greedy-trainer");
    let fake = dir.join("python");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nexec {} -c '\nimport json\ntry:\n    b = bytearray(12 * 10**9)\n    \
             print(json.dumps({{\"type\": \"error\", \"message\": \"allocated 12 GB\"}}))\n\
             except MemoryError as e:\n    \
             print(json.dumps({{\"type\": \"error\", \"message\": \"MemoryError: \" + str(e)}}))\n'\n",
            train_python()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (g, keys) = ft_gateway_with(
        "ft-memory-limit",
        fake.to_str().unwrap(),
        "[machine]\nmemory_gb = 20\n",
    );
    let ada = keys[2].clone();
    let s = g.start();
    let data = std::fs::read(repo().join("crates/aula/tests/data/finetune-mascot.jsonl")).unwrap();
    let file = upload(&s.url, &ada, "mascot.jsonl", &data, "fine-tune");
    let id = create_job(
        &s.url,
        &ada,
        serde_json::json!({"model": SMOL, "training_file": file, "hyperparameters": {"n_epochs": 1}}),
    );
    let j = wait_status(&s.url, &ada, &id, "failed", 120);
    let message = j["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.starts_with("MemoryError") && message.contains("may use at most"),
        "{j}"
    );
}

/// A fine-tune of a model served by vLLM: trained on the Hugging Face
/// directory vLLM serves (SmolLM2's weights, written from its GGUF by
/// transformers), stored as a PEFT adapter directory, loaded into the
/// running engine through vLLM's `/v1/load_lora_adapter`, loaded again
/// before a restarted engine is ready, and unloaded when the model is
/// deleted. The engine is a stand-in speaking vLLM's command line and
/// adapter endpoints (`tests/clients/vllm_standin.py`): no real vLLM here.
#[test]
fn a_vllm_base_serves_its_fine_tunes_as_runtime_adapters() {
    let train = train_python();
    let python = python_with("openai");
    let g = TestGateway::new("ft-vllm");
    // The base's Hugging Face directory, as vLLM would serve it.
    let hf = g.home.join("models").join("smol-hf");
    let out = Command::new(&train)
        .arg("-c")
        .arg(
            "import sys\n\
             from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer\n\
             p, f, o = sys.argv[1], sys.argv[2], sys.argv[3]\n\
             AutoTokenizer.from_pretrained(p, gguf_file=f).save_pretrained(o)\n\
             c = AutoConfig.from_pretrained(p, gguf_file=f)\n\
             c.__dict__.pop('quantization_config', None)\n\
             m = AutoModelForCausalLM.from_config(c)\n\
             m.load_state_dict(AutoModelForCausalLM.from_pretrained(p, gguf_file=f).state_dict(), strict=False)\n\
             m.tie_weights()\n\
             m.save_pretrained(o)",
        )
        .arg(model_path(SMOL_FILE).parent().unwrap())
        .arg(SMOL_FILE)
        .arg(&hf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let standin = repo().join("crates/aula/tests/clients/vllm_standin.py");
    let g = g.config(&format!(
        "[[models]]\nname = \"smol-vllm\"\nengine = \"vllm\"\nmodel = \"smol-hf\"\n\
         command = \"{} {}\"\nparallel = 2\ncontext = 2048\n\n\
         [fine_tuning]\npython = \"{train}\"\n\n[machine]\nmemory_gb = 20\n",
        python,
        standin.display()
    ));
    let (g, keys) = ft_home(g);
    let (ada, bob) = (&keys[2], &keys[3]);
    let log = g.home.join("logs").join("engine-smol-vllm.log");
    let s = g.start();
    let url = s.url.clone();
    let chat = |url: &str, key: &str, model: &str| {
        post_auth(
            &format!("{url}/v1/chat/completions"),
            Some(key),
            &serde_json::json!({"model": model, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8}),
        )
    };
    wait_for(
        "the stand-in to serve",
        std::time::Duration::from_secs(120),
        || chat(&url, ada, "smol-vllm").status == 200,
    );
    let standin_log = || std::fs::read_to_string(&log).unwrap_or_default();
    // Started as vLLM with run-time adapters.
    assert!(
        standin_log().contains("LoRA on, max rank 64, run-time updates on"),
        "{}",
        standin_log()
    );

    let data = std::fs::read(repo().join("crates/aula/tests/data/finetune-mascot.jsonl")).unwrap();
    let file = upload(&url, ada, "mascot.jsonl", &data, "fine-tune");
    // vLLM's --max-lora-rank bounds the rank a job may ask.
    let r = post_auth(
        &format!("{url}/v1/fine_tuning/jobs"),
        Some(ada),
        &serde_json::json!({"model": "smol-vllm", "training_file": file, "lora": {"rank": 128}}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(r.text.contains("--max-lora-rank 64"), "{}", r.text);
    let id = create_job(
        &url,
        ada,
        serde_json::json!({"model": "smol-vllm", "training_file": file, "suffix": "mascot",
                           "hyperparameters": {"n_epochs": 1}}),
    );
    let done = wait_status(&url, ada, &id, "succeeded", 900);
    let name = done["fine_tuned_model"].as_str().unwrap().to_string();
    assert!(name.starts_with("ft:smol-vllm:ada:mascot:"), "{name}");
    // A PEFT directory, loaded into the running engine.
    let dir = g.home.join("adapters").join("smol-vllm").join(&name);
    assert!(
        dir.join("adapter_config.json").is_file()
            && dir.join("adapter_model.safetensors").is_file()
    );
    assert!(
        standin_log().contains(&format!("loaded {name} from {}", dir.display())),
        "{}",
        standin_log()
    );
    let r = chat(&url, ada, &name);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["choices"][0]["message"]["content"],
        format!("served by the adapter {name}")
    );
    assert_eq!(r.body["model"], name.as_str());
    let r = chat(&url, ada, "smol-vllm");
    assert_eq!(
        r.body["choices"][0]["message"]["content"],
        "served by the base"
    );
    assert_eq!(chat(&url, bob, &name).status, 404);

    // A new gateway (and engine): the adapter is loaded before the engine
    // is ready, so the first request finds it.
    drop(s);
    let s = g.start();
    let url = s.url.clone();
    wait_for(
        "the model to be listed",
        std::time::Duration::from_secs(60),
        || {
            get_auth(&format!("{url}/v1/models"), Some(ada))
                .text
                .contains(&name)
        },
    );
    let r = chat(&url, ada, &name);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["choices"][0]["message"]["content"],
        format!("served by the adapter {name}")
    );
    assert_eq!(
        standin_log().matches(&format!("loaded {name}")).count(),
        2,
        "{}",
        standin_log()
    );

    // Deleted: unloaded from the engine, its directory gone.
    let (status, body) = delete_auth(&format!("{url}/v1/models/{name}"), ada);
    assert_eq!(status, 200, "{body}");
    assert!(
        standin_log().contains(&format!("unloaded {name}")),
        "{}",
        standin_log()
    );
    assert!(!dir.exists());
    assert_eq!(chat(&url, ada, &name).status, 404);
}
