//! The tables `aula users list`, `aula keys list` and `aula usage` print:
//! one typed value each, shown as text (`to_text`), CSV or JSON.

use crate::{KeyInfo, UsageRow, User};
use serde::Serialize;
use std::fmt::Write as _;

/// A time in milliseconds as `YYYY-MM-DD HH:MM` (UTC); `-` for none.
pub fn date_of(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "-".into())
}

#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Users(pub Vec<User>);

impl Users {
    pub fn to_text(&self) -> String {
        let mut out = format!("{:<24} {:<8} groups\n", "name", "role");
        for u in &self.0 {
            let _ = writeln!(out, "{:<24} {:<8} {}", u.name, u.role, u.groups.join(","));
        }
        out
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Keys(pub Vec<KeyInfo>);

impl Keys {
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "{:<12} {:<24} {:<17} {:<17} revoked\n",
            "id", "user", "created", "expires"
        );
        for k in &self.0 {
            let _ = writeln!(
                out,
                "{:<12} {:<24} {:<17} {:<17} {}",
                k.id,
                k.user,
                date_of(Some(k.created_ms)),
                date_of(k.expires_ms),
                date_of(k.revoked_ms)
            );
        }
        out
    }
}

/// Usage grouped `by` user, group or model.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Usage {
    #[serde(skip)]
    pub by: String,
    pub rows: Vec<UsageRow>,
}

impl Usage {
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<24} {:>8} {:>8} {:>7} {:>10} {:>12} {:>12} {:>10} {:>10}",
            self.by,
            "requests",
            "ok",
            "errors",
            "unfinished",
            "prompt tok",
            "output tok",
            "queue ms",
            "ttft ms"
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{:<24} {:>8} {:>8} {:>7} {:>10} {:>12} {:>12} {:>10.1} {:>10.1}",
                r.key,
                r.requests,
                r.ok,
                r.errors + r.cancelled,
                r.unfinished,
                r.prompt_tokens,
                r.completion_tokens,
                r.mean_queue_ms,
                r.mean_ttft_ms
            );
        }
        out
    }

    pub fn to_csv(&self) -> String {
        let mut out = format!(
            "{},requests,ok,errors,cancelled,unfinished,prompt_tokens,completion_tokens,mean_queue_ms,mean_ttft_ms\n",
            self.by
        );
        for r in &self.rows {
            let key = if r.key.contains([',', '"']) {
                format!("\"{}\"", r.key.replace('"', "\"\""))
            } else {
                r.key.clone()
            };
            let _ = writeln!(
                out,
                "{key},{},{},{},{},{},{},{},{:.1},{:.1}",
                r.requests,
                r.ok,
                r.errors,
                r.cancelled,
                r.unfinished,
                r.prompt_tokens,
                r.completion_tokens,
                r.mean_queue_ms,
                r.mean_ttft_ms
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_csv() {
        assert_eq!(date_of(Some(1_795_694_400_000)), "2026-11-26 12:00");
        assert_eq!(date_of(None), "-");
        let u = Usage {
            by: "user".into(),
            rows: vec![{
                let mut r = UsageRow::default();
                r.key = "a,\"b".into();
                r
            }],
        };
        assert!(
            u.to_csv()
                .lines()
                .nth(1)
                .unwrap_or("")
                .starts_with("\"a,\"\"b\",")
        );
        assert_eq!(serde_json::to_value(&u).unwrap()[0]["key"], "a,\"b");
    }
}
