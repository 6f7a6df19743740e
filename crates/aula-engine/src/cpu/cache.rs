//! The probe's answer, kept until the next boot (or a rebuilt module).

use super::AmxState;
use std::path::{Path, PathBuf};

/// The boot, and the module as built: its path, size and time.
fn key(library: &Path) -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let meta = std::fs::metadata(library).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(format!(
        "{} {} {} {mtime}",
        boot.trim(),
        library.display(),
        meta.len()
    ))
}

fn path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("aula").join("amx-probe"))
}

/// First line the key, second `works` or `failed <reason>`.
pub fn read(library: &Path) -> Option<AmxState> {
    let text = std::fs::read_to_string(path()?).ok()?;
    let mut lines = text.lines();
    if lines.next()? != key(library)? {
        return None;
    }
    let answer = lines.next()?;
    if answer == "works" {
        Some(AmxState::Works)
    } else {
        answer
            .strip_prefix("failed ")
            .map(|r| AmxState::ProbeFailed {
                reason: format!("{r} (cached for this boot)"),
            })
    }
}

pub fn write(library: &Path, state: &AmxState) {
    let (Some(path), Some(key)) = (path(), key(library)) else {
        return;
    };
    let answer = match state {
        AmxState::Works => "works".to_string(),
        AmxState::ProbeFailed { reason } => format!("failed {}", reason.replace('\n', " ")),
        _ => return,
    };
    let Some(dir) = path.parent() else { return };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let tmp = dir.join(format!("amx-probe.{}", std::process::id()));
    if std::fs::write(&tmp, format!("{key}\n{answer}\n")).is_ok() {
        let _ = std::fs::rename(&tmp, &path);
    } else {
        let _ = std::fs::remove_file(&tmp);
    }
}
