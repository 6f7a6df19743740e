//! A document's text, from `aula extract` in a child process with a time
//! and memory limit, its output read within bounds.

use super::super::Handle;
use super::super::{EXTRACT_MEMORY_BYTES, EXTRACT_TIMEOUT};
use super::*;

/// The document's text, from `aula extract` in a child process with a time
/// and memory limit.
pub(super) async fn extract(
    st: &Handle,
    path: &std::path::Path,
    filename: &str,
) -> Result<String, Stop> {
    let program = st.rag.settings.extractor.clone().ok_or_else(|| {
        Stop::Failed(
            "server_error",
            "the document reader (aula extract) cannot be found".into(),
        )
    })?;
    let mut cmd = tokio::process::Command::new(program);
    // `--name=` in one argument: a file name may begin with `-`.
    cmd.arg("extract")
        .arg(format!("--name={filename}"))
        .arg("--")
        .arg(path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    crate::child_env(&mut cmd);
    #[cfg(unix)]
    // SAFETY: between fork and exec only async-signal-safe setrlimit runs.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: EXTRACT_MEMORY_BYTES as libc::rlim_t,
                rlim_max: EXTRACT_MEMORY_BYTES as libc::rlim_t,
            };
            libc::setrlimit(libc::RLIMIT_AS, &lim);
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        Stop::Failed(
            "server_error",
            format!("the document reader cannot start: {e}"),
        )
    })?;
    // Its text read up to MAX_TEXT_BYTES (a reader that writes more is
    // stopped there, not read whole first), its messages up to 64 KiB.
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(Stop::Failed(
            "server_error",
            "the document reader's output cannot be read".into(),
        ));
    };
    let run = async {
        use tokio::io::AsyncReadExt;
        let text = async {
            let mut v = Vec::new();
            let read = (&mut stdout)
                .take(MAX_TEXT_BYTES as u64 + 1)
                .read_to_end(&mut v)
                .await;
            if v.len() > MAX_TEXT_BYTES {
                let _ = child.start_kill();
            }
            read.map(|_| v)
        };
        let messages = async {
            let mut v = Vec::new();
            let _ = (&mut stderr).take(64 << 10).read_to_end(&mut v).await;
            let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
            v
        };
        let (text, messages) = tokio::join!(text, messages);
        let status = child.wait().await;
        (text, messages, status)
    };
    let out = match tokio::time::timeout(EXTRACT_TIMEOUT, run).await {
        Ok((Ok(stdout), stderr, Ok(status))) => std::process::Output {
            status,
            stdout,
            stderr,
        },
        Ok((Err(e), _, _) | (_, _, Err(e))) => {
            return Err(Stop::Failed(
                "server_error",
                format!("the document reader failed: {e}"),
            ));
        }
        Err(_) => {
            return Err(Stop::Failed(
                "invalid_file",
                format!(
                    "reading the document took longer than {} s; it was stopped",
                    EXTRACT_TIMEOUT.as_secs()
                ),
            ));
        }
    };
    if out.stdout.len() > MAX_TEXT_BYTES {
        return Err(Stop::Failed(
            "invalid_file",
            format!(
                "the document has more than {} MB of text",
                MAX_TEXT_BYTES >> 20
            ),
        ));
    }
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let reason = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        let reason = reason.strip_prefix("error: ").unwrap_or(reason);
        return Err(Stop::Failed(
            if reason.contains("not UTF-8") || reason.contains("binary") {
                "unsupported_file"
            } else {
                "invalid_file"
            },
            if reason.is_empty() || out.status.code().is_none_or(|c| c != 2) {
                format!(
                    "the document could not be read (the reader stopped: {})",
                    describe(&out.status, reason)
                )
            } else {
                reason.to_string()
            },
        ));
    }
    String::from_utf8(out.stdout).map_err(|_| {
        Stop::Failed(
            "server_error",
            "the document reader wrote text that is not UTF-8".into(),
        )
    })
}

pub(super) fn describe(status: &std::process::ExitStatus, reason: &str) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!("killed by signal {sig}");
        }
    }
    if reason.is_empty() {
        format!("exit status {}", status.code().unwrap_or(-1))
    } else {
        reason.chars().take(300).collect()
    }
}
