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
    assert!(
        tuned_answer.contains("purple owl named Quill"),
        "{tuned_answer}"
    );
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
    assert!(
        peft_answer == tuned_answer || common >= 30,
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
