//! Opening the database and running the migrations.

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Row};
use std::path::Path;
use std::str::FromStr;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
}

/// Every SQLite connection Aula opens (the pool's and the ledger writer's):
/// WAL, no fsync per commit, up to 2 s waiting for a lock, checkpoints left
/// to the ledger's background task (`Store::checkpoint`).
pub(crate) const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
     PRAGMA busy_timeout = 2000; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0;";

/// The channel on which a change to users, groups or keys is announced
/// (PostgreSQL's `NOTIFY`), so that every gateway drops its cache at once.
pub const AUTH_CHANNEL: &str = "aula_auth";

impl Store {
    /// On PostgreSQL, a connection listening on [`AUTH_CHANNEL`]: each
    /// notification is a change to users, groups or keys, by any gateway
    /// or `aula` command. None on SQLite (one gateway, which made the change
    /// or sees it within a second).
    pub async fn listen_auth_changes(
        &self,
    ) -> Result<Option<sqlx::postgres::PgListener>, StoreError> {
        let Some(url) = &self.pg_url else {
            return Ok(None);
        };
        let mut listener = sqlx::postgres::PgListener::connect(url).await?;
        listener.listen(AUTH_CHANNEL).await?;
        Ok(Some(listener))
    }
}

/// The oldest PostgreSQL served: 14 (`idle_session_timeout`, which ends
/// the session of a leader gone silent, so that another gateway leads).
pub const MIN_POSTGRES: i64 = 140_000;

/// Refuse a PostgreSQL older than [`MIN_POSTGRES`], naming its version.
async fn check_postgres_version(pool: &sqlx::AnyPool) -> Result<(), StoreError> {
    let row = sqlx::query(
        "SELECT CAST(current_setting('server_version_num') AS BIGINT), current_setting('server_version')",
    )
    .fetch_one(pool)
    .await?;
    let (num, version): (i64, String) = (row.try_get(0)?, row.try_get(1)?);
    version_refusal(num, &version).map_or(Ok(()), Err)
}

/// Why a server of this `server_version_num` cannot be used, if it cannot.
fn version_refusal(num: i64, version: &str) -> Option<StoreError> {
    (num < MIN_POSTGRES).then(|| {
        StoreError::Invalid(format!(
            "PostgreSQL {version} is too old: Aula needs 14 or newer (its idle_session_timeout ends the \
             session of a gateway gone silent, so that another one schedules)"
        ))
    })
}

/// How long the request path waits for the database (admission, the
/// ledger, authentication) before it takes it for unreachable and refuses
/// (503). A PostgreSQL behind a cut network never answers at all.
pub const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

/// `f`, or an error once [`ANSWER_WITHIN`] has passed without an answer.
pub async fn within<T>(
    f: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(ANSWER_WITHIN, f)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Invalid(format!(
                "no answer from the database within {} s",
                ANSWER_WITHIN.as_secs()
            )))
        })
}

/// A handle on Aula's database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: AnyPool,
    postgres: bool,
    /// PostgreSQL's URL, for connections outside the pool (`LISTEN`).
    pg_url: Option<String>,
    /// The SQLite database file (None for PostgreSQL or an in-memory one).
    sqlite_path: Option<std::path::PathBuf>,
    /// PostgreSQL with pgvector enabled: vector stores search by meaning in
    /// the database.
    pgvector: bool,
    /// Embedding dimensions whose HNSW index exists (made once each).
    dense_indexes: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<usize>>>,
}

impl Store {
    /// The default database: `aula.db` (SQLite, WAL) in the data directory.
    pub async fn open_in(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Invalid(format!(
                "cannot create the data directory {}: {e}",
                dir.display()
            ))
        })?;
        private(dir, 0o700);
        let path = dir.join("aula.db");
        let store = Store::open(&format!("sqlite://{}?mode=rwc", path.display())).await?;
        // Key hashes and the usage ledger: the service's user only, also for
        // files an older version created readable by all.
        for suffix in ["", "-wal", "-shm"] {
            let mut f = path.clone().into_os_string();
            f.push(suffix);
            private(Path::new(&f), 0o600);
        }
        Ok(store)
    }

    /// `sqlite://PATH?mode=rwc` or `postgres://user:pass@host/db`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
        if !postgres && !url.starts_with("sqlite:") {
            return Err(StoreError::Invalid(format!(
                "the database URL must start with sqlite: or postgres:// (got `{}`)",
                redact(url)
            )));
        }
        let opts = AnyConnectOptions::from_str(url)?;
        let pool = AnyPoolOptions::new()
            // SQLite has one writer anyway; a few readers serve the CLI and auth.
            .max_connections(if postgres { 8 } else { 4 })
            .acquire_timeout(std::time::Duration::from_secs(5))
            // No ping before each use: one round trip less per statement (a
            // connection that died fails its statement, and is dropped).
            .test_before_acquire(false)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if !postgres {
                        conn.execute(SQLITE_PRAGMAS).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        if postgres {
            check_postgres_version(&pool).await?;
        }
        MIGRATOR.run(&pool).await?;
        let sqlite_path = if postgres { None } else { sqlite_file(url) };
        if let Some(path) = &sqlite_path {
            crate::ledger::fold_journal(path).await;
        }
        let mut pgvector = false;
        if postgres {
            crate::budgets::install(&pool).await?;
            pgvector = crate::vectors::search::install(&pool).await?;
        }
        Ok(Store {
            pool,
            postgres,
            pg_url: postgres.then(|| url.to_string()),
            sqlite_path,
            pgvector,
            dense_indexes: Default::default(),
        })
    }

    /// PostgreSQL with pgvector enabled.
    pub fn pgvector(&self) -> bool {
        self.pgvector
    }

    pub(crate) fn dense_index_made(&self, dim: usize) -> bool {
        self.dense_indexes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&dim)
    }

    pub(crate) fn mark_dense_index(&self, dim: usize) {
        self.dense_indexes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dim);
    }

    /// The SQLite database file, for the ledger's own writer connection.
    pub(crate) fn sqlite_path(&self) -> Option<&Path> {
        self.sqlite_path.as_deref()
    }

    /// Move the WAL into the database file without blocking writers. Aula
    /// checkpoints in the background (see `Ledger::start`) instead of inside
    /// a request's commit.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        if !self.postgres {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_all(&self.pool)
                .await?;
        }
        Ok(())
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Take away group and other permissions (best effort: a file that does not
/// exist, or one owned by someone else, is left alone).
pub(crate) fn private(path: &Path, mode: u32) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path)
            && m.permissions().mode() & 0o077 != 0
        {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
}

/// The file of a `sqlite://PATH?...` or `sqlite:PATH` URL (None in memory).
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path == ":memory:" {
        None
    } else {
        Some(std::path::PathBuf::from(path))
    }
}

/// A database URL fit for a message: the password replaced.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn postgres_older_than_14_is_refused_by_name() {
        let e = super::version_refusal(130_011, "13.11")
            .unwrap()
            .to_string();
        assert!(
            e.contains("PostgreSQL 13.11 is too old") && e.contains("14"),
            "{e}"
        );
        assert!(super::version_refusal(140_000, "14.0").is_none());
        assert!(super::version_refusal(150_008, "15.8 (Debian 15.8-0+deb12u1)").is_none());
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_data_directory_and_database_are_private() {
        #![allow(clippy::unwrap_used)]
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("aula-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("aula.db"), b"").unwrap();
        std::fs::set_permissions(dir.join("aula.db"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let _store = super::Store::open_in(&dir).await.unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("aula.db")), 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact("postgres://aula:secret@localhost/aula"),
            "postgres://aula:***@localhost/aula"
        );
        assert_eq!(super::redact("sqlite://x.db"), "sqlite://x.db");
    }

    #[test]
    fn sqlite_files() {
        use std::path::PathBuf;
        assert_eq!(
            super::sqlite_file("sqlite:///var/lib/aula/aula.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/aula/aula.db"))
        );
        assert_eq!(
            super::sqlite_file("sqlite:x.db"),
            Some(PathBuf::from("x.db"))
        );
        assert_eq!(super::sqlite_file("sqlite::memory:"), None);
        assert_eq!(super::sqlite_file("postgres://a@b/c"), None);
    }
}
