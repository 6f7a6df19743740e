//! One file per subcommand. Each parses its arguments into typed values,
//! asks the library crates for the work, and prints one typed result —
//! as text (`to_text()`) or as JSON, from the same value.

mod accounts;
mod admin;
mod assess;
mod backup;
mod bench;
mod doctor;
mod engine;
mod extract;
mod gateway;
mod plan;
mod serve;
mod stores;
mod usage;

use crate::cli::{Cli, Command, DbArgs};
use anyhow::{anyhow, bail};
use aula_gateway::config::Config;
use aula_gateway::home;
use std::io::Write;
use std::time::Duration;

pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(a) => serve::serve(a).await,
        Command::Engine(a) => engine::engine(a).await,
        Command::Bench(a) => bench::bench(a).await,
        Command::Plan(a) => plan::plan(a),
        Command::Home => doctor::show_home(),
        Command::Doctor(a) => doctor::doctor(a),
        Command::Assess(a) => assess::assess(a).await,
        Command::Users(c) => accounts::users(c).await,
        Command::Keys(c) => accounts::keys(c).await,
        Command::Usage(a) => usage::usage(a).await,
        Command::Backup(a) => backup::backup(a).await,
        Command::Restore(a) => backup::restore(a).await,
        Command::Ps(a) => admin::ps(a).await,
        Command::Load(a) => admin::load_unload("load", a).await,
        Command::Unload(a) => admin::load_unload("unload", a).await,
        Command::Extract(a) => extract::extract(a),
        Command::Stores(c) => stores::stores(c).await,
    }
}

/// Print `text` on stdout; a closed pipe (`| head`) is not an error.
fn print(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// A value as pretty JSON, with a final newline.
fn json<T: serde::Serialize>(v: &T) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(v)? + "\n")
}

/// The config file given, else aula.toml in the data directory if present.
pub(crate) fn load_config(
    path: Option<&std::path::Path>,
) -> anyhow::Result<(Config, Option<std::path::PathBuf>)> {
    Ok(match path {
        Some(p) => (Config::load(p)?, Some(p.to_path_buf())),
        None if home::default_config().exists() => {
            let p = home::default_config();
            (Config::load(&p)?, Some(p))
        }
        None => (Config::default(), None),
    })
}

pub(crate) async fn open_store(config: &Config) -> anyhow::Result<aula_store::Store> {
    aula_gateway::app::open_store(config).await
}

pub(crate) async fn db_store(db: &DbArgs) -> anyhow::Result<aula_store::Store> {
    let (config, _) = load_config(db.config.as_deref())?;
    open_store(&config).await
}

/// Does this URL point at this machine (a loopback host)?
pub(crate) fn is_local_url(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    aula_gateway::app::is_loopback(host)
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// `30s`, `2m`, `500ms`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let d = aula_gateway::config::parse_duration(s)
        .ok_or_else(|| anyhow!("`{s}` is not a duration (try 30s, 2m, 500ms)"))?;
    if d.is_zero() {
        bail!("the duration must be positive");
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::{is_local_url, parse_duration};
    use std::time::Duration;

    /// The local admin token goes only to gateways on this machine.
    #[test]
    fn local_urls() {
        for u in [
            "http://127.0.0.1:8080",
            "http://localhost:8080/",
            "http://[::1]:8080",
            "http://127.0.0.2",
        ] {
            assert!(is_local_url(u), "{u}");
        }
        for u in [
            "http://10.0.0.5:8080",
            "http://aula.example.lan:8080",
            "http://127.0.0.1.evil.com",
            "not a url",
        ] {
            assert!(!is_local_url(u), "{u}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("0s").is_err());
        assert_eq!(
            super::accounts::date_of(Some(1_795_694_400_000)),
            "2026-11-26 12:00"
        );
        assert!(
            super::usage::parse_since("7d").is_ok() && super::usage::parse_since("7y").is_err()
        );
        assert_eq!(
            super::usage::parse_since("2026-09-01").unwrap(),
            1_788_220_800_000
        );
    }
}
