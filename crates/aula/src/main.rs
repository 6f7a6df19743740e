//! The `aula` command: a thin CLI over the gateway, engine and bench crates.

mod cli;
mod cmd;

use clap::Parser;

fn main() -> std::process::ExitCode {
    // `aula` re-run as the AMX probe child of an engine (see aula_engine::cpu).
    if let Some(code) = aula_engine::cpu::run_probe_if_asked() {
        return std::process::ExitCode::from(code as u8);
    }
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AULA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(cmd::dispatch(cli)),
        Err(e) => Err(anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aula: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
