//! `aula serve`: the gateway and its fleet (`aula_gateway::app`), until
//! SIGINT or SIGTERM.

use super::{load_config, print, shutdown_signal};
use crate::cli::ServeArgs;
use anyhow::Context;
use aula_gateway::app::{App, Options};

pub async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    // What the gateway and its engines write — the database and its WAL, key
    // hashes, the ledger, engine logs — is readable by the service's user
    // only (a shared box has students with shells).
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
    // A file-size limit (`ulimit -f`, or a quota enforced as one) makes a
    // write fail with EFBIG, which the ledger reports and refuses requests
    // over, rather than killing the gateway with SIGXFSZ.
    // SAFETY: ignoring a signal changes only this process's disposition.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let (config, config_path) = load_config(a.config.as_deref())?;
    let opts = Options {
        host: a
            .host
            .or(config.server.host.clone())
            .unwrap_or_else(|| "127.0.0.1".into()),
        port: a.port.or(config.server.port).unwrap_or(8080),
        insecure_no_auth: a.insecure_no_auth,
        exe: std::env::current_exe().context("cannot find the aula executable")?,
    };
    let app = App::start(&config, config_path, opts).await?;
    print(&app.banner());
    app.run(shutdown_signal()).await
}
