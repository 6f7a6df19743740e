//! `aula backup DIR` and `aula restore DIR`: the service's state in a
//! folder, and back.
//!
//! Rules:
//! - A backup is a new folder holding `aula.db` (a checked, consistent copy
//!   taken while gateways serve: `aula_store::backup`), the configuration
//!   file as `aula.toml`, `assessment.toml`, and the folders `files/`
//!   (uploads), `fine_tuning/` and `adapters/`, where they exist. Not
//!   copied: `models/` (large, and the admin's own files), `logs/`, the
//!   local admin token (made anew at the next start), the lock.
//! - Restore takes the data directory's lock, so it refuses while a
//!   gateway serves it; checks the backup's database before touching
//!   anything; then moves everything it replaces (the database with its
//!   `-wal`, `-shm` and ledger journal, and each item above) into
//!   `before-restore-DATE/` in the data directory, and copies the backup's
//!   in. Nothing is deleted: a wrong restore is undone by hand.
//! - PostgreSQL is refused: `pg_dump` and `pg_restore` are its tools.

use super::{load_config, open_store, print};
use crate::cli::BackupArgs;
use anyhow::{Context, anyhow, bail};
use aula_gateway::config::Config;
use aula_gateway::home;
use std::path::{Path, PathBuf};

/// What a backup holds besides the database: its name in the backup
/// folder and where it lives in this installation.
fn items(config: &Config, config_path: Option<&Path>) -> Vec<(&'static str, PathBuf)> {
    let h = home::aula_home();
    vec![
        (
            "aula.toml",
            config_path.map_or_else(home::default_config, Path::to_path_buf),
        ),
        ("assessment.toml", home::assessment_path()),
        (
            "files",
            config
                .server
                .files_dir
                .clone()
                .unwrap_or_else(|| h.join("files")),
        ),
        ("fine_tuning", h.join("fine_tuning")),
        ("adapters", h.join("adapters")),
    ]
}

/// The SQLite database file this configuration uses.
fn database_file(config: &Config) -> anyhow::Result<PathBuf> {
    match config.server.database.as_deref() {
        None => Ok(home::aula_home().join("aula.db")),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => bail!(
            "the database is PostgreSQL ({}): back it up with pg_dump and restore it with \
             pg_restore; copy the data directory's files/, fine_tuning/ and adapters/ with it",
            aula_store::db::redact(url)
        ),
        Some(url) => aula_store::db::sqlite_file(url)
            .ok_or_else(|| anyhow!("the database `{url}` is not a file: nothing to back up")),
    }
}

pub async fn backup(a: BackupArgs) -> anyhow::Result<()> {
    let (config, config_path) = load_config(a.db.config.as_deref())?;
    database_file(&config)?;
    let dir = &a.dir;
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("{} is not a folder", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty: a backup goes into a new or empty folder",
            dir.display()
        );
    }
    let made = !dir.exists();
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    private_dir(dir);
    // A folder inside one it copies would copy itself, without end.
    let inside = std::fs::canonicalize(dir)?;
    for (_, from) in items(&config, config_path.as_deref()) {
        if let Ok(from) = std::fs::canonicalize(&from)
            && inside.starts_with(&from)
        {
            if made {
                let _ = std::fs::remove_dir(dir);
            }
            bail!(
                "{} is inside {}, which the backup copies: choose a folder outside it",
                dir.display(),
                from.display()
            );
        }
    }
    let store = open_store(&config).await?;
    let copied = store.backup_into(&dir.join("aula.db")).await;
    store.close().await;
    let c = copied?;
    let mut out = format!("aula.db: {}\n", holds(&c));
    for (name, from) in items(&config, config_path.as_deref()) {
        if !from.exists() {
            continue;
        }
        let n = copy_all(&from, &dir.join(name))
            .with_context(|| format!("copying {} into the backup", from.display()))?;
        out += &if from.is_dir() {
            format!("{name}/: {n} files from {}\n", from.display())
        } else {
            format!("{name}: from {}\n", from.display())
        };
    }
    out += &format!(
        "backed up into {} (not copied: models/, logs/); put it back with `aula restore {}`\n",
        dir.display(),
        dir.display()
    );
    print(&out);
    Ok(())
}

pub async fn restore(a: BackupArgs) -> anyhow::Result<()> {
    let (config, config_path) = load_config(a.db.config.as_deref())?;
    let db = database_file(&config)?;
    let from = &a.dir;
    let copy = from.join("aula.db");
    if !copy.is_file() {
        bail!(
            "{} has no aula.db: not a folder made by `aula backup`",
            from.display()
        );
    }
    let h = home::aula_home();
    // No gateway may serve while its files are swapped.
    let _lock = home::lock_data_dir(&h).map_err(|e| anyhow!("{e}"))?;
    let c = aula_store::backup::check_copy(&copy).map_err(|e| anyhow!("{e}"))?;
    let aside = aside_dir(&h)?;
    let out = swap_in(&config, config_path.as_deref(), from, &db, &aside).with_context(|| {
        format!(
            "the restore stopped half-way; what was there before is in {}",
            aside.display()
        )
    })?;
    print(&format!(
        "aula.db: {}, into {}\n{out}restored from {}\n",
        holds(&c),
        db.display(),
        from.display()
    ));
    Ok(())
}

/// Move what the backup in `from` replaces into `aside`, and copy the
/// backup's in: the database `db` first, then each item. What it did, one
/// line per item.
fn swap_in(
    config: &Config,
    config_path: Option<&Path>,
    from: &Path,
    db: &Path,
    aside: &Path,
) -> anyhow::Result<String> {
    // The database and every file beside it that belongs to it: `-wal` and
    // `-shm` (a stale WAL would be replayed onto the restored file) and the
    // ledger's journal segments (folded into the wrong database otherwise).
    let db_dir = db
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let db_name = db
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("{}: not a file name", db.display()))?
        .to_string();
    let mut moved = Vec::new();
    if db_dir.is_dir() {
        for entry in std::fs::read_dir(&db_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == db_name || name.starts_with(&format!("{db_name}-")) {
                move_aside(&entry.path(), &aside.join(&name))?;
                moved.push(name);
            }
        }
    }
    std::fs::create_dir_all(&db_dir)?;
    copy_all(&from.join("aula.db"), db)?;
    let mut out = String::new();
    for (name, to) in items(config, config_path) {
        let src = from.join(name);
        if !src.exists() {
            continue;
        }
        if to.exists() {
            move_aside(&to, &aside.join(name))?;
            moved.push(name.to_string());
        }
        let n = copy_all(&src, &to).with_context(|| format!("restoring {}", to.display()))?;
        out += &if src.is_dir() {
            format!("{name}/: {n} files into {}\n", to.display())
        } else {
            format!("{name}: into {}\n", to.display())
        };
    }
    if moved.is_empty() {
        let _ = std::fs::remove_dir(aside);
    } else {
        out += &format!(
            "what was there before ({}) is in {}\n",
            moved.join(", "),
            aside.display()
        );
    }
    Ok(out)
}

/// What a checked copy of the database holds, in words.
fn holds(c: &aula_store::backup::CopyCounts) -> String {
    format!(
        "{} users, {} keys, {} requests in the ledger, {} files, {} vector stores, \
         {} fine-tuning jobs ({:.1} MB)",
        c.users,
        c.keys,
        c.requests,
        c.files,
        c.vector_stores,
        c.fine_tuning_jobs,
        c.bytes as f64 / 1e6
    )
}

/// A new `before-restore-DATE[-N]` folder in the data directory.
fn aside_dir(home: &Path) -> anyhow::Result<PathBuf> {
    let date = aula_store::tables::date_of(Some(aula_store::now_ms()))
        .replace(' ', "-")
        .replace(':', "");
    for n in 1..1000 {
        let name = if n == 1 {
            format!("before-restore-{date}")
        } else {
            format!("before-restore-{date}-{n}")
        };
        let p = home.join(name);
        match std::fs::create_dir(&p) {
            Ok(()) => {
                private_dir(&p);
                return Ok(p);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", p.display())),
        }
    }
    bail!("too many before-restore folders in {}", home.display())
}

/// Move `from` to `to`: a rename, or a copy and a removal across file
/// systems.
fn move_aside(from: &Path, to: &Path) -> anyhow::Result<()> {
    if std::fs::rename(from, to).is_ok() {
        return Ok(());
    }
    copy_all(from, to).with_context(|| format!("cannot move {} aside", from.display()))?;
    if from.is_dir() {
        std::fs::remove_dir_all(from)?;
    } else {
        std::fs::remove_file(from)?;
    }
    Ok(())
}

/// Copy a file, or a folder and everything in it; the number of files.
fn copy_all(from: &Path, to: &Path) -> std::io::Result<u64> {
    if !from.is_dir() {
        std::fs::copy(from, to)?;
        return Ok(1);
    }
    std::fs::create_dir_all(to)?;
    let mut n = 0;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        n += copy_all(&entry.path(), &to.join(entry.file_name()))?;
    }
    Ok(n)
}

/// Owner only: a backup holds key hashes and the ledger.
fn private_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}
