//! A copy of the SQLite database that can be restored, taken while
//! gateways keep using it.
//!
//! Rules:
//! - Copying `aula.db` by hand is not a backup: recent changes (a new key,
//!   the last minutes of the ledger) may still be only in `aula.db-wal`, and
//!   a stale `-wal` left beside a restored file is replayed onto it.
//! - [`Store::backup_into`] writes one self-contained file with SQLite's
//!   `VACUUM INTO`: one read transaction, so a consistent state with what
//!   the WAL holds, and the ledger's journal folded in (opening the store
//!   folds it). Writers are not blocked.
//! - Every copy is checked before it is called one ([`check_copy`]:
//!   `PRAGMA quick_check`, then what it holds is counted from the copy
//!   itself), when made and again before it is restored.
//! - PostgreSQL is refused: `pg_dump` is its backup.

use crate::{Store, StoreError};
use std::path::Path;

/// What a checked copy holds, read from the copy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CopyCounts {
    pub bytes: u64,
    pub users: i64,
    pub keys: i64,
    /// Rows in the usage ledger.
    pub requests: i64,
    pub files: i64,
    pub vector_stores: i64,
    pub fine_tuning_jobs: i64,
}

impl Store {
    /// A consistent copy of this SQLite database at `to`, a path that must
    /// not exist yet, checked and counted ([`check_copy`]); made private
    /// to its owner (key hashes, the ledger).
    pub async fn backup_into(&self, to: &Path) -> Result<CopyCounts, StoreError> {
        if self.is_postgres() {
            return Err(StoreError::Invalid(
                "the database is PostgreSQL: back it up with pg_dump (and restore with pg_restore)"
                    .into(),
            ));
        }
        if to.exists() {
            return Err(StoreError::Invalid(format!(
                "{} already exists: a backup never overwrites a file",
                to.display()
            )));
        }
        let target = to
            .to_str()
            .ok_or_else(|| StoreError::Invalid(format!("{} is not a UTF-8 path", to.display())))?;
        sqlx::query("VACUUM INTO ?")
            .bind(target.to_string())
            .execute(&self.pool)
            .await?;
        crate::db::private(to, 0o600);
        let to = to.to_path_buf();
        tokio::task::spawn_blocking(move || check_copy(&to))
            .await
            .map_err(|e| StoreError::Invalid(format!("checking the copy: {e}")))?
    }
}

/// Open `path` read-only, run SQLite's `quick_check`, and count what it
/// holds. An error names what is wrong: not a database, damaged, or not
/// Aula's (no `users` table).
pub fn check_copy(path: &Path) -> Result<CopyCounts, StoreError> {
    use rusqlite::OpenFlags;
    let bad = |what: String| StoreError::Invalid(format!("{}: {what}", path.display()));
    let bytes = std::fs::metadata(path)
        .map_err(|e| bad(format!("cannot read it ({e})")))?
        .len();
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| bad(format!("cannot open it ({e})")))?;
    let verdict: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| bad(format!("not a readable SQLite database ({e})")))?;
    if verdict != "ok" {
        return Err(bad(format!("damaged (SQLite's quick_check: {verdict})")));
    }
    let count = |table: &str| -> Result<i64, StoreError> {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .map_err(|e| bad(format!("not an Aula database (table {table}: {e})")))
    };
    Ok(CopyCounts {
        bytes,
        users: count("users")?,
        keys: count("api_keys")?,
        requests: count("requests")?,
        files: count("files")?,
        vector_stores: count("vector_stores")?,
        fine_tuning_jobs: count("fine_tuning_jobs")?,
    })
}

#[cfg(test)]
mod tests {
    use super::check_copy;

    /// A copy holds what was committed, and a file that is not one is
    /// refused by name.
    #[tokio::test]
    async fn a_copy_is_checked_and_counted_and_never_overwrites() {
        let dir = std::env::temp_dir().join(format!("aula-backup-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = crate::Store::open_in(&dir).await.unwrap();
        for name in ["ada", "bo"] {
            store
                .put_user(
                    &crate::User {
                        name: name.into(),
                        role: crate::Role::Student,
                        groups: vec![],
                    },
                    false,
                )
                .await
                .unwrap();
        }
        store.create_key("ada", None).await.unwrap();
        let to = dir.join("copy.db");
        let c = store.backup_into(&to).await.unwrap();
        assert_eq!((c.users, c.keys, c.requests), (2, 1, 0), "{c:?}");
        assert!(c.bytes > 0);
        // Never over an existing file.
        let e = store.backup_into(&to).await.unwrap_err().to_string();
        assert!(e.contains("already exists"), "{e}");
        // Not a database.
        let junk = dir.join("junk.db");
        std::fs::write(&junk, b"not sqlite at all, just some bytes here").unwrap();
        let e = check_copy(&junk).unwrap_err().to_string();
        assert!(
            e.contains("junk.db") && e.contains("not a readable SQLite database"),
            "{e}"
        );
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
