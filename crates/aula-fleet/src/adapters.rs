//! LoRA adapters a vLLM engine loads at run time: the fleet's side of
//! serving fine-tuned models on a vLLM base. The request shapes are vLLM's
//! (`POST /v1/load_lora_adapter {"lora_name", "lora_path"}`, `POST
//! /v1/unload_lora_adapter {"lora_name"}`, both allowed only with
//! `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True` in the server's environment);
//! a request then names the adapter as its `model`.
//!
//! Rules:
//! * A vLLM model given an adapter directory (`lora_dir`) starts with
//!   `--enable-lora --max-lora-rank` [`MAX_LORA_RANK`] and that variable set.
//! * Every subdirectory of the adapter directory that holds an
//!   `adapter_config.json` (PEFT's format, what vLLM loads) is an adapter
//!   named by the subdirectory. An engine loads them all after it answers
//!   `/health` and before it is marked ready: a restarted engine serves its
//!   fine-tuned models from its first request.
//! * [`crate::Fleet::load_adapter`] and [`crate::Fleet::unload_adapter`]
//!   reach every running engine of the model; one not running reads the
//!   directory at its next start.
//! * vLLM's 400 "has already been loaded" counts as loaded, and unloading
//!   one it does not have (404) as unloaded: both are the state wanted.

use crate::backend::HttpClient;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use std::path::Path;
use std::time::Duration;

/// `--max-lora-rank`: the highest rank a fine-tuning job on a vLLM base
/// may ask (vLLM sizes its LoRA buffers by it).
pub const MAX_LORA_RANK: u32 = 64;

/// The arguments a vLLM engine with run-time adapters gets.
pub fn vllm_args() -> Vec<String> {
    vec![
        "--enable-lora".into(),
        "--max-lora-rank".into(),
        MAX_LORA_RANK.to_string(),
    ]
}

/// The environment variable vLLM's adapter endpoints need.
pub const RUNTIME_UPDATES_ENV: (&str, &str) = ("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "True");

/// The adapters in `dir`: (name, path), by name.
pub fn list(dir: &Path) -> Vec<(String, std::path::PathBuf)> {
    let mut out: Vec<(String, std::path::PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().join("adapter_config.json").is_file())
                .filter_map(|e| Some((e.file_name().to_str()?.to_string(), e.path())))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

async fn post(
    client: &HttpClient,
    base: &str,
    key: Option<&str>,
    path: &str,
    body: serde_json::Value,
) -> Result<(u16, String), String> {
    let mut req = Request::post(format!("{base}{path}"))
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(k) = key {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {k}"));
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(120), client.request(req))
        .await
        .map_err(|_| format!("{path}: no answer within 120 s"))?
        .map_err(|e| format!("{path}: {e}"))?;
    let status = resp.status().as_u16();
    let text = tokio::time::timeout(
        Duration::from_secs(30),
        http_body_util::Limited::new(resp.into_body(), 64 << 10).collect(),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
    .unwrap_or_default();
    Ok((status, text))
}

/// Load one adapter into the engine at `base`.
pub async fn load(
    client: &HttpClient,
    base: &str,
    key: Option<&str>,
    name: &str,
    path: &Path,
) -> Result<(), String> {
    let body = serde_json::json!({"lora_name": name, "lora_path": path});
    match post(client, base, key, "/v1/load_lora_adapter", body).await? {
        (200..=299, _) => Ok(()),
        (400, text) if text.contains("already been loaded") => Ok(()),
        (status, text) => Err(format!(
            "loading the adapter `{name}`: {status} {}",
            text.chars().take(300).collect::<String>()
        )),
    }
}

/// Unload one adapter from the engine at `base`.
pub async fn unload(
    client: &HttpClient,
    base: &str,
    key: Option<&str>,
    name: &str,
) -> Result<(), String> {
    let body = serde_json::json!({"lora_name": name});
    match post(client, base, key, "/v1/unload_lora_adapter", body).await? {
        (200..=299 | 404, _) => Ok(()),
        (status, text) => Err(format!(
            "unloading the adapter `{name}`: {status} {}",
            text.chars().take(300).collect::<String>()
        )),
    }
}

/// Load every adapter in `dir` into a freshly started engine; the errors,
/// one per adapter that did not load (its model then answers 404 until the
/// next start).
pub async fn load_all(
    client: &HttpClient,
    base: &str,
    key: Option<&str>,
    dir: &Path,
) -> Vec<String> {
    let mut errors = Vec::new();
    for (name, path) in list(dir) {
        if let Err(e) = load(client, base, key, &name, &path).await {
            errors.push(e);
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn adapters_are_the_subdirectories_with_a_peft_config() {
        let dir = std::env::temp_dir().join(format!("aula-adapters-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (name, config) in [
            ("ft:b:ada::1", true),
            ("ft:b:bob::2", true),
            ("half-copied", false),
        ] {
            std::fs::create_dir_all(dir.join(name)).unwrap();
            if config {
                std::fs::write(dir.join(name).join("adapter_config.json"), "{}").unwrap();
            }
        }
        std::fs::write(dir.join("stray.gguf"), "x").unwrap();
        let names: Vec<String> = list(&dir).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["ft:b:ada::1", "ft:b:bob::2"]);
        assert!(list(&dir.join("missing")).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
