//! `aula engine`: one model on llama.cpp, speaking the OpenAI API.

use super::shutdown_signal;
use crate::cli::EngineArgs;
use anyhow::{Context, bail};

pub async fn engine(a: EngineArgs) -> anyhow::Result<()> {
    let name = a
        .name
        .unwrap_or_else(|| aula_gateway::config::name_for_file(&a.model));
    let cfg = aula_engine::EngineConfig {
        model: a.model,
        name: Some(name),
        parallel: a.parallel,
        context: a.context,
        threads: a.threads,
        queue: a.queue,
        batch: a.batch,
        verbose: a.verbose,
        api_key: a.api_key.filter(|k| !k.is_empty()),
        pooling: a.pooling.map(|p| match p {
            crate::cli::PoolingArg::Mean => aula_engine::Pooling::Mean,
            crate::cli::PoolingArg::Cls => aula_engine::Pooling::Cls,
            crate::cli::PoolingArg::Last => aula_engine::Pooling::Last,
        }),
        gpu_layers: a.gpu_layers,
        devices: a
            .device
            .iter()
            .flat_map(|d| d.split(','))
            .map(|d| d.trim().to_string())
            .filter(|d| !d.is_empty())
            .collect(),
        flash_attn: a.flash_attn,
        cache_type_k: a.cache_type_k,
        cache_type_v: a.cache_type_v,
        lora: a
            .lora
            .iter()
            .map(|l| match l.rsplit_once(':') {
                Some((p, s)) if s.parse::<f32>().is_ok() => (p.into(), s.parse().unwrap_or(1.0)),
                _ => (l.into(), 1.0),
            })
            .collect(),
        lora_dir: a.lora_dir.clone(),
        chat_template_file: a.chat_template_file.clone(),
        preempt: !a.no_preempt,
    };
    // The socket first, the model second: a port is never left free while
    // the model loads.
    let listener = match a.listen_fd {
        Some(fd) => inherited_listener(fd)?,
        None => tokio::net::TcpListener::bind((a.host.as_str(), a.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", a.host, a.port))?,
    };
    let engine = tokio::task::spawn_blocking(move || aula_engine::load(&cfg)).await??;
    let addr = listener.local_addr()?;
    let st = &engine.state;
    println!(
        "aula engine: model {} listening on http://{addr} ({} slots x {} tokens, {} threads, chat template {}, {} MiB allocated)",
        st.name,
        st.parallel,
        st.context,
        st.threads,
        st.template.source.as_str(),
        st.memory.total_bytes / (1 << 20)
    );
    aula_engine::serve(&engine, listener, shutdown_signal()).await?;
    Ok(())
}

/// A listening TCP socket the parent passed down as file descriptor `fd`.
fn inherited_listener(fd: i32) -> anyhow::Result<tokio::net::TcpListener> {
    use std::os::fd::FromRawFd;
    if fd < 3 {
        bail!("--listen-fd {fd}: not an inherited socket");
    }
    // SAFETY: `aula serve` passes a listening socket it created as this fd and
    // closes its own copy; nothing else in this process uses the number.
    let std_listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    // Not passed on to processes the engine starts (its AMX probe).
    // SAFETY: setting a flag on a descriptor this process owns.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    std_listener
        .local_addr()
        .with_context(|| format!("--listen-fd {fd} is not a listening TCP socket"))?;
    std_listener.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(std_listener)?)
}
