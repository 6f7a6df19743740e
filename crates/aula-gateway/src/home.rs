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
