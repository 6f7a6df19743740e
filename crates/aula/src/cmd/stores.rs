//! `aula stores`: a teacher's vector stores from the command line — the same
//! calls as the API (`/v1/files`, `/v1/vector_stores`), as the caller's key.

use super::gateway::{Payload, call};
use super::{json, print};
use crate::cli::{GatewayArgs, StoresCommand};
use anyhow::{anyhow, bail};
use serde_json::{Value, json as j};
use std::path::{Path, PathBuf};

/// Files attached per batch call (the gateway's limit).
const BATCH: usize = 500;

pub async fn stores(c: StoresCommand) -> anyhow::Result<()> {
    match c {
        StoresCommand::Create {
            name,
            paths,
            shares,
            gateway,
        } => create(&gateway, &name, &paths, &shares).await,
        StoresCommand::List {
            json: as_json,
            gateway,
        } => {
            let v = call(&gateway, "GET", "/v1/vector_stores?limit=100", None).await?;
            print(&if as_json { json(&v)? } else { list_text(&v) });
            Ok(())
        }
        StoresCommand::Search {
            store,
            query,
            mode,
            max_results,
            json: as_json,
            gateway,
        } => {
            let body = j!({"query": query, "search_mode": mode, "max_num_results": max_results});
            let v = call(
                &gateway,
                "POST",
                &format!("/v1/vector_stores/{store}/search"),
                Some(Payload::json(&body)),
            )
            .await?;
            print(&if as_json { json(&v)? } else { search_text(&v) });
            Ok(())
        }
        StoresCommand::Rm { store, gateway } => {
            call(
                &gateway,
                "DELETE",
                &format!("/v1/vector_stores/{store}"),
                None,
            )
            .await?;
            print(&format!("deleted {store}\n"));
            Ok(())
        }
    }
}

/// Every file under `paths` (directories read recursively, hidden entries
/// skipped), in a stable order.
fn files_under(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        let meta = std::fs::metadata(p).map_err(|e| anyhow!("{}: {e}", p.display()))?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| anyhow!("{}: {e}", p.display()))?
                .flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| e.path())
                .collect();
            entries.sort();
            for e in entries {
                walk(&e, out)?;
            }
        } else {
            out.push(p.to_path_buf());
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        walk(p, &mut out)?;
    }
    Ok(out)
}

/// A multipart body with one file and `purpose=assistants`.
fn multipart(name: &str, bytes: &[u8]) -> Payload {
    let boundary = format!("aula-{}", aula_gateway::random_id(24));
    let clean: String = name
        .chars()
        .filter(|c| *c != '"' && *c != '\r' && *c != '\n')
        .collect();
    let mut body = Vec::with_capacity(bytes.len() + 512);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nassistants\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{clean}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Payload {
        content_type: format!("multipart/form-data; boundary={boundary}"),
        bytes: body.into(),
    }
}

async fn create(
    g: &GatewayArgs,
    name: &str,
    paths: &[PathBuf],
    shares: &[String],
) -> anyhow::Result<()> {
    let files = files_under(paths)?;
    if files.is_empty() {
        bail!(
            "no files under {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut body = j!({"name": name});
    if !shares.is_empty() {
        body["shared_with_groups"] = j!(shares);
    }
    let store = call(g, "POST", "/v1/vector_stores", Some(Payload::json(&body))).await?;
    let store_id = store["id"]
        .as_str()
        .ok_or_else(|| anyhow!("the gateway answered no store id"))?
        .to_string();
    let bar = indicatif::ProgressBar::new(files.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:12} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message("uploading");
    let mut ids = Vec::with_capacity(files.len());
    for f in &files {
        let bytes = std::fs::read(f).map_err(|e| anyhow!("{}: {e}", f.display()))?;
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let up = call(g, "POST", "/v1/files", Some(multipart(&name, &bytes)))
            .await
            .map_err(|e| anyhow!("{}: {e}", f.display()))?;
        ids.push(up["id"].as_str().unwrap_or_default().to_string());
        bar.inc(1);
    }
    for batch in ids.chunks(BATCH) {
        call(
            g,
            "POST",
            &format!("/v1/vector_stores/{store_id}/file_batches"),
            Some(Payload::json(&j!({"file_ids": batch}))),
        )
        .await?;
    }
    bar.set_position(0);
    bar.set_message("ingesting");
    let counts = loop {
        let s = call(g, "GET", &format!("/v1/vector_stores/{store_id}"), None).await?;
        let c = s["file_counts"].clone();
        let finished = c["completed"].as_u64().unwrap_or(0)
            + c["failed"].as_u64().unwrap_or(0)
            + c["cancelled"].as_u64().unwrap_or(0);
        bar.set_position(finished);
        if c["in_progress"].as_u64() == Some(0) {
            break c;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    bar.finish_and_clear();
    let mut out = format!(
        "{store_id}  {name}: {} of {} files ingested",
        counts["completed"],
        files.len()
    );
    if !shares.is_empty() {
        out.push_str(&format!(", shared with {}", shares.join(", ")));
    }
    out.push('\n');
    if counts["failed"].as_u64().unwrap_or(0) > 0 {
        let failed = call(
            g,
            "GET",
            &format!("/v1/vector_stores/{store_id}/files?filter=failed&limit=100"),
            None,
        )
        .await?;
        for f in failed["data"].as_array().into_iter().flatten() {
            let i = ids
                .iter()
                .position(|id| Some(id.as_str()) == f["id"].as_str());
            let shown = i
                .map(|i| files[i].display().to_string())
                .unwrap_or_else(|| f["id"].to_string());
            out.push_str(&format!(
                "  failed: {shown}: {}\n",
                f["last_error"]["message"].as_str().unwrap_or("")
            ));
        }
    }
    print(&out);
    Ok(())
}

fn list_text(v: &Value) -> String {
    let mut out = format!(
        "{:<28} {:<24} {:>11} {:<12} {}\n",
        "ID", "NAME", "FILES", "OWNER", "SHARED WITH"
    );
    for s in v["data"].as_array().into_iter().flatten() {
        let shared: Vec<&str> = s["shared_with_groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        out.push_str(&format!(
            "{:<28} {:<24} {:>11} {:<12} {}\n",
            s["id"].as_str().unwrap_or(""),
            s["name"].as_str().unwrap_or(""),
            format!(
                "{}/{}",
                s["file_counts"]["completed"], s["file_counts"]["total"]
            ),
            s["owner"].as_str().unwrap_or(""),
            if shared.is_empty() {
                "-".to_string()
            } else {
                shared.join(",")
            },
        ));
    }
    out
}

fn search_text(v: &Value) -> String {
    let mut out = String::new();
    for (i, r) in v["data"].as_array().into_iter().flatten().enumerate() {
        let text = r["content"][0]["text"].as_str().unwrap_or("");
        let snippet: String = text.chars().take(160).collect();
        out.push_str(&format!(
            "{}. {:.3}  {}\n   {}{}\n",
            i + 1,
            r["score"].as_f64().unwrap_or(0.0),
            r["filename"].as_str().unwrap_or(""),
            snippet.replace('\n', " "),
            if text.chars().count() > 160 {
                "…"
            } else {
                ""
            }
        ));
    }
    if out.is_empty() {
        out.push_str("no results\n");
    }
    out
}
