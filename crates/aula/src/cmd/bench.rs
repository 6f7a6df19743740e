//! `aula bench`: simulated students against a gateway; one report.

use super::{parse_duration, print};
use crate::cli::BenchArgs;
use anyhow::{Context, bail};

pub async fn bench(a: BenchArgs) -> anyhow::Result<()> {
    let limit = match (&a.duration, a.requests) {
        (Some(d), _) => aula_bench::Limit::Duration(parse_duration(d)?),
        (None, Some(r)) => aula_bench::Limit::Requests(r),
        (None, None) => aula_bench::Limit::Requests(100),
    };
    let keys = match (&a.keys, &a.api_key) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let keys: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
            if keys.is_empty() {
                bail!("{} holds no keys", path.display());
            }
            keys
        }
        (None, Some(k)) => vec![k.clone()],
        (None, None) => Vec::new(),
    };
    let cfg = aula_bench::BenchConfig {
        url: a.url,
        model: a.model,
        users: a.users,
        concurrency: a.concurrency.unwrap_or(a.users),
        limit,
        prompt_tokens: a.prompt_tokens,
        max_tokens: a.max_tokens,
        stream: a.stream,
        keys,
        temperature: a.temperature,
        progress: !a.json,
        heavy: a.heavy,
        think: a.think.as_deref().map(parse_duration).transpose()?,
        heavy_users: a.heavy_users,
        heavy_max_tokens: a.heavy_max_tokens,
        open_loop: a.open_loop,
    };
    let report = aula_bench::run(cfg).await?;
    print(&if a.json {
        super::json(&report)?
    } else {
        report.to_text()
    });
    Ok(())
}
