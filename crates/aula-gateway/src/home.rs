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
