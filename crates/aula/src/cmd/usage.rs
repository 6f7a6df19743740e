//! `aula usage`: the ledger, grouped by user, group or model.

use super::{db_store, parse_duration, print};
use crate::cli::UsageArgs;
use anyhow::anyhow;
use aula_store::tables::Usage;
use std::time::Duration;

/// `2026-09-01`, or a span back from now: `24h`, `7d`, `30m`.
pub fn parse_since(s: &str) -> anyhow::Result<i64> {
    if let Some(ms) = aula_gateway::config::parse_date_ms(s) {
        return Ok(ms);
    }
    let span = if let Some(d) = s.strip_suffix('d') {
        let n: f64 = d
            .parse()
            .map_err(|_| anyhow!("`{s}`: use a date (2026-09-01) or a span (24h, 7d)"))?;
        Duration::from_secs_f64(n * 86_400.0)
    } else {
        parse_duration(s)
            .map_err(|_| anyhow!("`{s}`: use a date (2026-09-01) or a span (24h, 7d)"))?
    };
    Ok(aula_store::now_ms() - span.as_millis() as i64)
}

pub async fn usage(a: UsageArgs) -> anyhow::Result<()> {
    let by: aula_store::UsageBy = a.by.parse().map_err(|e: String| anyhow!("--by {e}"))?;
    let since = a
        .since
        .as_deref()
        .map(parse_since)
        .transpose()?
        .unwrap_or(i64::MIN);
    let usage = Usage {
        by: a.by.clone(),
        rows: db_store(&a.db).await?.usage(by, since).await?,
    };
    print(&if a.json {
        super::json(&usage)?
    } else if a.csv {
        usage.to_csv()
    } else {
        usage.to_text()
    });
    Ok(())
}
