//! The records of uploaded files. The bytes are not here: the gateway keeps
//! them in the data directory under the file's id; a row is written only
//! once the bytes are complete on disk, and removed before they are.

use crate::db::{Store, StoreError};
use sqlx::Row;

/// One uploaded file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileRecord {
    pub id: String,
    pub owner: String,
    pub purpose: String,
    pub filename: String,
    pub bytes: i64,
    pub created_ms: i64,
}

/// Which page of a user's files.
#[derive(Debug, Clone, Default)]
pub struct FileQuery {
    pub purpose: Option<String>,
    /// Files after this id, in the order asked.
    pub after: Option<String>,
    /// At most this many (the caller bounds it).
    pub limit: i64,
    /// Oldest first (else newest first).
    pub ascending: bool,
}

fn record(r: &sqlx::any::AnyRow) -> Result<FileRecord, StoreError> {
    Ok(FileRecord {
        id: r.try_get(0)?,
        owner: r.try_get(1)?,
        purpose: r.try_get(2)?,
        filename: r.try_get(3)?,
        bytes: r.try_get(4)?,
        created_ms: r.try_get(5)?,
    })
}

const COLUMNS: &str = "id, owner, purpose, filename, bytes, created_ms";

impl Store {
    pub async fn put_file(&self, f: &FileRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO files (id, owner, purpose, filename, bytes, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&f.id)
        .bind(&f.owner)
        .bind(&f.purpose)
        .bind(&f.filename)
        .bind(f.bytes)
        .bind(f.created_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A file by id, whoever owns it (callers check the owner).
    pub async fn file(&self, id: &str) -> Result<Option<FileRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM files WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record).transpose()
    }

    /// A page of `owner`'s files, and whether more follow it.
    pub async fn files_of(
        &self,
        owner: &str,
        q: &FileQuery,
    ) -> Result<(Vec<FileRecord>, bool), StoreError> {
        // The cursor: (created_ms, id) of the `after` file, when it is this owner's.
        let cursor = match &q.after {
            Some(a) => self
                .file(a)
                .await?
                .filter(|f| f.owner == owner)
                .map(|f| (f.created_ms, f.id)),
            None => None,
        };
        let (cmp, order) = if q.ascending {
            (">", "ASC")
        } else {
            ("<", "DESC")
        };
        let mut sql = format!("SELECT {COLUMNS} FROM files WHERE owner = $1");
        let mut n = 1;
        if q.purpose.is_some() {
            n += 1;
            sql.push_str(&format!(" AND purpose = ${n}"));
        }
        if cursor.is_some() {
            sql.push_str(&format!(
                " AND (created_ms {cmp} ${} OR (created_ms = ${} AND id {cmp} ${}))",
                n + 1,
                n + 1,
                n + 2
            ));
        }
        sql.push_str(&format!(
            " ORDER BY created_ms {order}, id {order} LIMIT {}",
            q.limit.max(0) + 1
        ));
        let mut query = sqlx::query(&sql).bind(owner);
        if let Some(p) = &q.purpose {
            query = query.bind(p);
        }
        if let Some((ms, id)) = &cursor {
            query = query.bind(*ms).bind(id);
        }
        let rows = query.fetch_all(&self.pool).await?;
        let mut files: Vec<FileRecord> = rows.iter().map(record).collect::<Result<_, _>>()?;
        let more = files.len() as i64 > q.limit.max(0);
        files.truncate(q.limit.max(0) as usize);
        Ok((files, more))
    }

    /// The bytes `owner`'s files take together.
    pub async fn storage_of(&self, owner: &str) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM files WHERE owner = $1",
        )
        .bind(owner)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Remove a file's record; false when there was none.
    pub async fn delete_file(&self, id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM files WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_page_by_owner_purpose_and_cursor() {
        let dir = std::env::temp_dir().join(format!("aula-files-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open_in(&dir).await.unwrap();
        for (i, (owner, purpose)) in [
            ("ada", "assistants"),
            ("ada", "user_data"),
            ("bob", "assistants"),
            ("ada", "assistants"),
        ]
        .iter()
        .enumerate()
        {
            store
                .put_file(&FileRecord {
                    id: format!("file-{i}"),
                    owner: owner.to_string(),
                    purpose: purpose.to_string(),
                    filename: "x.txt".into(),
                    bytes: 10 * (i as i64 + 1),
                    created_ms: 1000 + i as i64,
                })
                .await
                .unwrap();
        }
        let q = |purpose: Option<&str>, after: Option<&str>, limit, ascending| FileQuery {
            purpose: purpose.map(String::from),
            after: after.map(String::from),
            limit,
            ascending,
        };
        let ids = |v: &[FileRecord]| v.iter().map(|f| f.id.clone()).collect::<Vec<_>>();
        let (all, more) = store
            .files_of("ada", &q(None, None, 10, false))
            .await
            .unwrap();
        assert_eq!(ids(&all), ["file-3", "file-1", "file-0"]);
        assert!(!more);
        let (page, more) = store
            .files_of("ada", &q(None, None, 2, true))
            .await
            .unwrap();
        assert_eq!(ids(&page), ["file-0", "file-1"]);
        assert!(more);
        let (next, more) = store
            .files_of("ada", &q(None, Some("file-1"), 2, true))
            .await
            .unwrap();
        assert_eq!(ids(&next), ["file-3"]);
        assert!(!more);
        let (a, _) = store
            .files_of("ada", &q(Some("assistants"), None, 10, true))
            .await
            .unwrap();
        assert_eq!(ids(&a), ["file-0", "file-3"]);
        // Someone else's id as a cursor is no cursor.
        let (x, _) = store
            .files_of("ada", &q(None, Some("file-2"), 10, true))
            .await
            .unwrap();
        assert_eq!(x.len(), 3);
        assert_eq!(store.storage_of("ada").await.unwrap(), 10 + 20 + 40);
        assert_eq!(store.storage_of("nobody").await.unwrap(), 0);
        assert!(store.delete_file("file-0").await.unwrap());
        assert!(!store.delete_file("file-0").await.unwrap());
        assert!(store.file("file-0").await.unwrap().is_none());
        assert_eq!(store.file("file-2").await.unwrap().unwrap().owner, "bob");
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
