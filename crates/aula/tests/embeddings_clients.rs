//! `/v1/embeddings` through real clients: the official `openai` Python
//! package and `langchain-openai` (which sends cl100k_base token arrays), run
//! by tests/clients/embeddings_clients.py against `aula serve`.
//!
//! Needs AULA_TEST_PYTHON (scripts/test.sh sets it, and installs the packages
//! into .venv). tiktoken would download cl100k_base on first use; the test
//! gives it the copy that the tiktoken-rs crate carries in its sources.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const EMBED_FILE: &str = "all-minilm-l6-v2.gguf";
const EMBED: &str = "all-minilm-l6-v2";

/// Where tiktoken caches a download: the sha1 (hex) of its URL,
/// https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken
/// (tiktoken/load.py, `read_file_cached`). The script checks both the name
/// and the sha256 that tiktoken verifies.
const CL100K_CACHE_NAME: &str = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4";

/// tiktoken-rs's copy of cl100k_base, in the cargo registry's sources
/// ($CARGO_HOME, else ~/.cargo): `cargo test` has unpacked it there, since the
/// engine depends on it.
fn cl100k_asset() -> PathBuf {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .expect("neither CARGO_HOME nor HOME is set");
    let src = cargo_home.join("registry").join("src");
    let mut found = Vec::new();
    for index in std::fs::read_dir(&src).into_iter().flatten().flatten() {
        for krate in std::fs::read_dir(index.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = krate.file_name().to_string_lossy().into_owned();
            let asset = krate.path().join("assets").join("cl100k_base.tiktoken");
            if name.starts_with("tiktoken-rs-") && asset.is_file() {
                found.push(asset);
            }
        }
    }
    // Every version carries the same file (the script checks its sha256);
    // take one deterministically.
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!(
            "no tiktoken-rs-*/assets/cl100k_base.tiktoken under {}: set CARGO_HOME to the cargo \
             home that built this workspace (tiktoken-rs is a dependency of aula-engine)",
            src.display()
        )
    })
}

#[test]
fn openai_and_langchain_clients_get_matching_embeddings() {
    let python = python_with("openai, langchain_openai, tiktoken");
    let embed_model = models_dir().join(EMBED_FILE);
    assert!(
        embed_model.exists(),
        "{} is missing: run `bash scripts/setup.sh` (it fetches the embedding model)",
        embed_model.display()
    );

    let home = temp_home("embed-clients");
    let models = home.join("models");
    std::os::unix::fs::symlink(&embed_model, models.join(EMBED_FILE)).unwrap();
    std::os::unix::fs::symlink(model_path(SMOL_FILE), models.join(SMOL_FILE)).unwrap();
    let cache = home.join("tiktoken-cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::copy(cl100k_asset(), cache.join(CL100K_CACHE_NAME)).unwrap();

    let s = spawn_aula(&["serve", "--port", "0"], Some(&home));
    wait_for("every model to be ready", Duration::from_secs(120), || {
        get(&format!("{}/readyz", s.url)).status == 200
    });

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/embeddings_clients.py");
    let out = std::process::Command::new(&python)
        .arg(&script)
        .args([s.url.as_str(), EMBED])
        .env("TIKTOKEN_CACHE_DIR", &cache)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("EMBEDDINGS-CLIENTS-OK"),
        "{} failed ({})\nstdout: {stdout}\nstderr: {stderr}\naula: {}",
        script.display(),
        out.status,
        s.output()
    );
    drop(s);
}
