//! Aula's one data directory: models, database, logs and default config.

use std::path::PathBuf;

/// `$AULA_HOME`, else `$XDG_DATA_HOME/aula`, else `~/.local/share/aula`.
pub fn aula_home() -> PathBuf {
    if let Some(h) = std::env::var_os("AULA_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(x).join("aula");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local").join("share").join("aula")
}

pub fn models_dir() -> PathBuf {
    aula_home().join("models")
}

pub fn logs_dir() -> PathBuf {
    aula_home().join("logs")
}

/// What `aula assess` measured on this machine.
pub fn assessment_path() -> PathBuf {
    aula_home().join("assessment.toml")
}

/// This machine's assessment, if `aula assess` made one (and it reads).
pub fn assessment() -> Result<Option<aula_planner::assessment::Assessment>, String> {
    let path = assessment_path();
    match std::fs::read_to_string(&path) {
        Ok(text) => aula_planner::assessment::Assessment::from_toml(&text)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The config file read when `--config` is not given, if it exists.
pub fn default_config() -> PathBuf {
    aula_home().join("aula.toml")
}

/// How every local admin token begins.
pub const LOCAL_ADMIN_PREFIX: &str = "aula-local-";

/// The local admin token's file: it makes its bearer an admin of the
/// gateway serving this data directory (`aula ps|load|unload` send it).
pub fn local_admin_token_path() -> PathBuf {
    aula_home().join("admin-token")
}

/// The local admin token, made (readable by this account only) if there is
/// none yet.
pub fn ensure_local_admin_token() -> std::io::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(t) = read_local_admin_token() {
        return Ok(t);
    }
    let path = local_admin_token_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let token = format!(
        "{LOCAL_ADMIN_PREFIX}{}",
        aula_store::identity::random_string(40)
    );
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(token.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(token)
}

/// The local admin token, if this account can read one.
pub fn read_local_admin_token() -> Option<String> {
    let t = std::fs::read_to_string(local_admin_token_path()).ok()?;
    let t = t.trim();
    (t.starts_with(LOCAL_ADMIN_PREFIX) && t.len() > 20).then(|| t.to_string())
}

/// The data directory held by one gateway: an exclusive `flock` on
/// `serve.lock` in it, with the holder's PID written inside, released when
/// this is dropped or the process ends (however it ends). Two gateways on one
/// data directory would both run ingestion and fine-tuning on the same
/// database, and one's start-up sweep would remove the other's uploads in
/// progress.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

/// Hold the data directory `dir` for this process, or say who holds it.
pub fn lock_data_dir(dir: &std::path::Path) -> std::io::Result<DataDirLock> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(dir)?;
    let path = dir.join("serve.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    // SAFETY: flock on a descriptor this function owns.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() {
                "another process".to_string()
            } else {
                format!("another gateway (pid {holder})")
            };
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "{who} is serving the data directory {} (it holds {}); stop it first, \
                     or give this one another AULA_HOME",
                    dir.display(),
                    path.display()
                ),
            ));
        }
        return Err(err);
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    file.flush()?;
    Ok(DataDirLock { _file: file })
}
