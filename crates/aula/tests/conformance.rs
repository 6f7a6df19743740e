//! Aula's answers match OpenAI's published contract (issue 31): the
//! official `openai` Python client calls every endpoint Aula implements
//! (tests/clients/conformance_client.py), and every raw JSON body and
//! streamed event is validated against the schema OpenAI's own OpenAPI
//! description gives it — tests/data/openai-schemas.json, cut from
//! github.com/openai/openai-openapi by scripts/openai_schemas.py, its commit
//! named in the file.
//!
//! Real engines: SmolLM2 for chat (bounded outputs; nothing asserts on what
//! it writes) and all-MiniLM-L6-v2 for embeddings and retrieval. Needs
//! AULA_TEST_PYTHON (openai, jsonschema) and AULA_TRAIN_PYTHON (fine-tuning
//! jobs are created and cancelled), as scripts/test.sh sets them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;
use common::*;
use std::path::Path;

const EMBED_FILE: &str = "all-minilm-l6-v2.gguf";

#[test]
fn every_endpoint_answers_in_openai_s_published_shapes() {
    let python = python_with("openai, jsonschema");
    let train = std::env::var("AULA_TRAIN_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/aula/train-venv/bin/python")
    });
    assert!(
        Path::new(&train).exists(),
        "{train} is missing: run `bash scripts/setup-trainer.sh` (or scripts/test.sh), or set AULA_TRAIN_PYTHON"
    );
    let g = TestGateway::new("conformance").config(&format!(
        "[[models]]\nname = \"{SMOL}\"\ngguf = \"{SMOL_FILE}\"\ncontext = 2048\nparallel = 2\n\n\
         [[models]]\nname = \"minilm\"\ngguf = \"{EMBED_FILE}\"\n\n\
         [fine_tuning]\npython = \"{train}\"\n"
    ));
    for f in [SMOL_FILE, EMBED_FILE] {
        std::os::unix::fs::symlink(model_path(f), g.home.join("models").join(f)).unwrap();
    }
    g.write_config();
    let mut keys = Vec::new();
    for (user, role) in [("tina", "teacher"), ("ada", "student")] {
        keys.push(add_user(&g.home, user, &["--role", role]));
    }
    let s = g.start();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let script = dir.join("clients/conformance_client.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .args([s.url.as_str(), SMOL, "minilm", &keys[0], &keys[1]])
        .arg(dir.join("data/openai-schemas.json"))
        .arg(dir.join("data/finetune-mascot.jsonl"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("CONFORMANCE-OK"),
        "{} failed ({})\nstdout: {stdout}\nstderr: {stderr}\naula: {}",
        script.display(),
        out.status,
        s.output()
    );
}
