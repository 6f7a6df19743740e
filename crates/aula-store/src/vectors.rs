//! Vector stores, their files and their chunks.
//!
//! The rules:
//! * A store is visible to its owner and, read-only, to members of the
//!   groups it is shared with; [`Store::vector_stores_visible`] answers only
//!   those (the gateway turns anything else into a 404).
//! * A file's chunks appear all at once: [`Store::complete_store_file`]
//!   writes them and marks the file `completed` in one transaction, and only
//!   if the file is still `in_progress` in that store (a file removed or
//!   cancelled meanwhile is not resurrected). So a crash mid-ingestion
//!   leaves the file `in_progress` with no chunks, and ingesting it again
//!   never doubles anything.
//! * Every change to a store's searchable chunks bumps its `generation`.

use crate::db::{Store, StoreError};
use base64::Engine as _;
use sqlx::Row;
mod files;
pub mod search;

/// One vector store. JSON fields are kept as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VectorStoreRecord {
    pub id: String,
    pub owner: String,
    pub owner_role: crate::Role,
    pub owner_groups: Vec<String>,
    pub name: String,
    pub description: Option<String>,
    pub metadata: String,
    pub chunking: String,
    pub generation: i64,
    pub created_ms: i64,
    pub last_active_ms: i64,
    /// Groups whose members may read it.
    pub shares: Vec<String>,
}

/// A vector store file's status (OpenAI's four; a file batch's status is
/// one of them too), stored as its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    InProgress,
    Completed,
    Failed,
    Cancelled,
}

impl FileStatus {
    pub const ALL: [FileStatus; 4] = [
        FileStatus::InProgress,
        FileStatus::Completed,
        FileStatus::Failed,
        FileStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::InProgress => "in_progress",
            FileStatus::Completed => "completed",
            FileStatus::Failed => "failed",
            FileStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<FileStatus> {
        FileStatus::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// Attaching the file again queues it again (its work ended without
    /// its chunks).
    pub fn may_queue_again(self) -> bool {
        matches!(self, FileStatus::Failed | FileStatus::Cancelled)
    }
}

/// One file in a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFileRecord {
    pub store_id: String,
    pub file_id: String,
    pub status: FileStatus,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub attributes: String,
    pub chunking: String,
    pub usage_bytes: i64,
    pub created_ms: i64,
}

/// Files of a store by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FileCounts {
    pub in_progress: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub total: i64,
}

/// A chunk to store.
#[derive(Debug, Clone)]
pub struct NewChunk {
    pub text: String,
    pub tokens: i64,
    pub embedding: Vec<f32>,
    /// Its text's terms as the lexical search analyses them, in order
    /// (PostgreSQL searches them itself: [`search`]).
    pub terms: Vec<String>,
}

/// A stored chunk with what search needs of its file.
#[derive(Debug, Clone)]
pub struct ChunkRow {
    pub file_id: String,
    pub filename: String,
    pub attributes: String,
    pub text: String,
    pub embedding: Vec<f32>,
}

const STORE_COLUMNS: &str = "id, owner, owner_role, owner_groups, name, description, metadata, \
     chunking, generation, created_ms, last_active_ms";
const FILE_COLUMNS: &str = "store_id, file_id, status, error_code, error_message, \
     attributes, chunking, usage_bytes, created_ms";
/// The same, from `vector_store_files v` joined with a batch's files.
const V_FILE_COLUMNS: &str = "v.store_id, v.file_id, v.status, v.error_code, v.error_message, \
     v.attributes, v.chunking, v.usage_bytes, v.created_ms";
/// A store's files, or one batch's (`$2`).
const IN_BATCH: &str = "FROM vector_store_files v JOIN vector_store_batch_files b \
     ON b.store_id = v.store_id AND b.file_id = v.file_id WHERE v.store_id = $1 AND b.batch_id = $2";

fn store_record(r: &sqlx::any::AnyRow) -> Result<VectorStoreRecord, StoreError> {
    let groups: String = r.try_get(3)?;
    Ok(VectorStoreRecord {
        id: r.try_get(0)?,
        owner: r.try_get(1)?,
        owner_role: crate::identity::parse_role(&r.try_get::<String, _>(2)?)?,
        owner_groups: split_groups(&groups),
        name: r.try_get(4)?,
        description: r.try_get(5)?,
        metadata: r.try_get(6)?,
        chunking: r.try_get(7)?,
        generation: r.try_get(8)?,
        created_ms: r.try_get(9)?,
        last_active_ms: r.try_get(10)?,
        shares: Vec::new(),
    })
}

fn file_status(s: &str) -> Result<FileStatus, StoreError> {
    FileStatus::parse(s).ok_or_else(|| {
        StoreError::Invalid(format!("a vector store file has the unknown status `{s}`"))
    })
}

fn file_record(r: &sqlx::any::AnyRow) -> Result<StoreFileRecord, StoreError> {
    Ok(StoreFileRecord {
        store_id: r.try_get(0)?,
        file_id: r.try_get(1)?,
        status: file_status(&r.try_get::<String, _>(2)?)?,
        error_code: r.try_get(3)?,
        error_message: r.try_get(4)?,
        attributes: r.try_get(5)?,
        chunking: r.try_get(6)?,
        usage_bytes: r.try_get(7)?,
        created_ms: r.try_get(8)?,
    })
}

fn split_groups(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|g| !g.is_empty())
        .map(String::from)
        .collect()
}

pub fn encode_vector(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn decode_vector(s: &str) -> Result<Vec<f32>, StoreError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| StoreError::Invalid(format!("a stored embedding is not base64: {e}")))?;
    if bytes.len() % 4 != 0 {
        return Err(StoreError::Invalid(
            "a stored embedding has a partial float".into(),
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

impl Store {
    pub async fn create_vector_store(&self, s: &VectorStoreRecord) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(&format!(
            "INSERT INTO vector_stores ({STORE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(&s.id)
        .bind(&s.owner)
        .bind(s.owner_role.as_str())
        .bind(s.owner_groups.join(","))
        .bind(&s.name)
        .bind(&s.description)
        .bind(&s.metadata)
        .bind(&s.chunking)
        .bind(s.generation)
        .bind(s.created_ms)
        .bind(s.last_active_ms)
        .execute(&mut *tx)
        .await?;
        for g in &s.shares {
            sqlx::query("INSERT INTO vector_store_shares (store_id, group_name) VALUES ($1, $2)")
                .bind(&s.id)
                .bind(g)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A store by id with its shares, whoever may see it (callers check).
    pub async fn vector_store(&self, id: &str) -> Result<Option<VectorStoreRecord>, StoreError> {
        let Some(row) = sqlx::query(&format!(
            "SELECT {STORE_COLUMNS} FROM vector_stores WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let mut s = store_record(&row)?;
        s.shares = sqlx::query(
            "SELECT group_name FROM vector_store_shares WHERE store_id = $1 ORDER BY group_name",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
        Ok(Some(s))
    }

    /// The stores `user` owns or may read through `groups`, oldest first.
    pub async fn vector_stores_visible(
        &self,
        user: &str,
        groups: &[String],
    ) -> Result<Vec<VectorStoreRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {STORE_COLUMNS} FROM vector_stores WHERE owner = $1 ORDER BY created_ms, id"
        ))
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        let mut ids: Vec<String> = rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        for g in groups {
            let shared =
                sqlx::query("SELECT store_id FROM vector_store_shares WHERE group_name = $1")
                    .bind(g)
                    .fetch_all(&self.pool)
                    .await?;
            for r in shared {
                let id: String = r.try_get(0)?;
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        let mut out = Vec::new();
        for id in ids {
            if let Some(s) = self.vector_store(&id).await? {
                out.push(s);
            }
        }
        out.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        Ok(out)
    }

    /// Change a store's name, description, metadata and shares (each when given).
    pub async fn update_vector_store(
        &self,
        id: &str,
        name: Option<&str>,
        metadata: Option<&str>,
        shares: Option<&[String]>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Some(n) = name {
            sqlx::query("UPDATE vector_stores SET name = $1 WHERE id = $2")
                .bind(n)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(m) = metadata {
            sqlx::query("UPDATE vector_stores SET metadata = $1 WHERE id = $2")
                .bind(m)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(gs) = shares {
            sqlx::query("DELETE FROM vector_store_shares WHERE store_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            for g in gs {
                sqlx::query(
                    "INSERT INTO vector_store_shares (store_id, group_name) VALUES ($1, $2)",
                )
                .bind(id)
                .bind(g)
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query("UPDATE vector_stores SET last_active_ms = $1 WHERE id = $2")
            .bind(now_ms)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_vector_store(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM chunks WHERE store_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM vector_store_files WHERE store_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM vector_store_shares WHERE store_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM vector_store_batch_files WHERE store_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let r = sqlx::query("DELETE FROM vector_stores WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    /// The stores `owner` has made.
    pub async fn vector_stores_owned(&self, owner: &str) -> Result<i64, StoreError> {
        let row =
            sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) FROM vector_stores WHERE owner = $1")
                .bind(owner)
                .fetch_one(&self.pool)
                .await?;
        Ok(row.try_get(0)?)
    }

    /// Files by status and the bytes of their chunks, for one store or one
    /// batch of it.
    pub async fn store_file_counts(
        &self,
        store_id: &str,
        batch_id: Option<&str>,
    ) -> Result<(FileCounts, i64), StoreError> {
        let cols =
            "v.status, CAST(COUNT(*) AS BIGINT), CAST(COALESCE(SUM(v.usage_bytes), 0) AS BIGINT)";
        let sql = match batch_id {
            Some(_) => format!("SELECT {cols} {IN_BATCH} GROUP BY v.status"),
            None => format!(
                "SELECT {cols} FROM vector_store_files v WHERE v.store_id = $1 GROUP BY v.status"
            ),
        };
        let mut q = sqlx::query(&sql).bind(store_id);
        if let Some(b) = batch_id {
            q = q.bind(b);
        }
        let mut c = FileCounts::default();
        let mut bytes = 0;
        for r in q.fetch_all(&self.pool).await? {
            let status = file_status(&r.try_get::<String, _>(0)?)?;
            let n: i64 = r.try_get(1)?;
            bytes += r.try_get::<i64, _>(2)?;
            *match status {
                FileStatus::InProgress => &mut c.in_progress,
                FileStatus::Completed => &mut c.completed,
                FileStatus::Failed => &mut c.failed,
                FileStatus::Cancelled => &mut c.cancelled,
            } += n;
            c.total += n;
        }
        Ok((c, bytes))
    }

    /// Move a store's generation on (its chunks changed outside a file's
    /// completion or removal: their search columns were filled in).
    pub async fn bump_store_generation(&self, store_id: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        bump(&mut tx, store_id).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn store_generation(&self, store_id: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT generation FROM vector_stores WHERE id = $1")
            .bind(store_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get(0)).transpose().map_err(Into::into)
    }

    /// Every searchable chunk of a store (its completed files), in file
    /// and chunk order.
    pub async fn store_chunks(&self, store_id: &str) -> Result<Vec<ChunkRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.file_id, COALESCE(f.filename, c.file_id), v.attributes, c.text, c.embedding \
             FROM chunks c JOIN vector_store_files v ON v.store_id = c.store_id AND v.file_id = c.file_id \
             LEFT JOIN files f ON f.id = c.file_id \
             WHERE c.store_id = $1 AND v.status = $2 ORDER BY v.created_ms, c.file_id, c.seq",
        )
        .bind(store_id)
        .bind(FileStatus::Completed.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let emb: String = r.try_get(4)?;
                Ok(ChunkRow {
                    file_id: r.try_get(0)?,
                    filename: r.try_get(1)?,
                    attributes: r.try_get(2)?,
                    text: r.try_get(3)?,
                    embedding: decode_vector(&emb)?,
                })
            })
            .collect()
    }
}

async fn bump(tx: &mut sqlx::Transaction<'_, sqlx::Any>, store_id: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE vector_stores SET generation = generation + 1 WHERE id = $1")
        .bind(store_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn file_statuses_are_openai_s_names_both_ways() {
        for s in FileStatus::ALL {
            assert_eq!(FileStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(FileStatus::parse("done"), None);
        assert!(file_status("done").is_err());
    }

    fn vs(id: &str, owner: &str, shares: &[&str]) -> VectorStoreRecord {
        VectorStoreRecord {
            id: id.into(),
            owner: owner.into(),
            owner_role: crate::Role::Teacher,
            owner_groups: vec!["cs101".into()],
            name: format!("{id} name"),
            description: None,
            metadata: "{}".into(),
            chunking: "{}".into(),
            generation: 0,
            created_ms: 1,
            last_active_ms: 1,
            shares: shares.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn vf(store: &str, file: &str) -> StoreFileRecord {
        StoreFileRecord {
            store_id: store.into(),
            file_id: file.into(),
            status: FileStatus::InProgress,
            error_code: None,
            error_message: None,
            attributes: "{}".into(),
            chunking: "{}".into(),
            usage_bytes: 0,
            created_ms: 1,
        }
    }

    #[tokio::test]
    async fn stores_are_visible_by_owner_and_share_and_chunks_land_once() {
        let dir = std::env::temp_dir().join(format!("aula-vs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open_in(&dir).await.unwrap();
        store
            .create_vector_store(&vs("vs_a", "teacher", &["cs101"]))
            .await
            .unwrap();
        store
            .create_vector_store(&vs("vs_b", "ada", &[]))
            .await
            .unwrap();
        let ids = |v: Vec<VectorStoreRecord>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store
                .vector_stores_visible("bob", &["cs101".into()])
                .await
                .unwrap()),
            ["vs_a"]
        );
        assert_eq!(
            ids(store.vector_stores_visible("ada", &[]).await.unwrap()),
            ["vs_b"]
        );
        assert!(
            store
                .vector_stores_visible("eve", &["bio".into()])
                .await
                .unwrap()
                .is_empty()
        );

        assert!(
            store
                .add_store_file(&vf("vs_a", "file-1"), Some("b1"))
                .await
                .unwrap()
        );
        assert!(
            !store
                .add_store_file(&vf("vs_a", "file-1"), Some("b1"))
                .await
                .unwrap()
        );
        assert_eq!(store.pending_store_files(10).await.unwrap().len(), 1);
        let by_owner = store.pending_store_files_by_owner(10).await.unwrap();
        assert_eq!(by_owner.len(), 1);
        let owner = by_owner[0].1.clone();
        assert_eq!(store.pending_store_files_of(&owner).await.unwrap(), 1);
        assert_eq!(store.pending_store_files_of("nobody").await.unwrap(), 0);
        // Claims: a live gateway's claim holds; once it has left the list
        // of gateways, another may take the file; a claim given back frees it.
        let gw = |id: &str| crate::GatewayRow {
            id: id.into(),
            host: "box".into(),
            pid: 1,
            address: "127.0.0.1:1".into(),
            started_ms: 1,
            seen_ms: 1,
        };
        store.join_gateways(&gw("g1")).await.unwrap();
        store.join_gateways(&gw("g2")).await.unwrap();
        assert!(
            store
                .claim_store_file("vs_a", "file-1", "g1")
                .await
                .unwrap()
        );
        assert!(
            store
                .claim_store_file("vs_a", "file-1", "g1")
                .await
                .unwrap()
        );
        assert!(
            !store
                .claim_store_file("vs_a", "file-1", "g2")
                .await
                .unwrap()
        );
        store.leave_gateways("g1").await.unwrap();
        assert!(
            store
                .claim_store_file("vs_a", "file-1", "g2")
                .await
                .unwrap()
        );
        store
            .release_store_file("vs_a", "file-1", "g2")
            .await
            .unwrap();
        assert!(
            store
                .claim_store_file("vs_a", "file-1", "g3")
                .await
                .unwrap()
        );
        store
            .release_store_file("vs_a", "file-1", "g3")
            .await
            .unwrap();
        let g0 = store.store_generation("vs_a").await.unwrap().unwrap();
        let chunk = |t: &str| NewChunk {
            text: t.into(),
            tokens: 2,
            embedding: vec![0.5, -1.0],
            terms: t.split(' ').map(String::from).collect(),
        };
        assert!(
            store
                .complete_store_file("vs_a", "file-1", &[chunk("a b"), chunk("c d")], 8)
                .await
                .unwrap()
        );
        // Twice: the second finds the file completed and writes nothing.
        assert!(
            !store
                .complete_store_file("vs_a", "file-1", &[chunk("x")], 8)
                .await
                .unwrap()
        );
        let rows = store.store_chunks("vs_a").await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].text, "c d");
        assert_eq!(rows[0].embedding, vec![0.5, -1.0]);
        assert!(store.store_generation("vs_a").await.unwrap().unwrap() > g0);
        assert_eq!(
            store.store_files("vs_a", Some("b1")).await.unwrap().len(),
            1
        );
        let (c, bytes) = store.store_file_counts("vs_a", None).await.unwrap();
        assert_eq!((c.completed, c.total, bytes), (1, 1, 8));

        store
            .add_store_file(&vf("vs_a", "file-2"), None)
            .await
            .unwrap();
        assert!(
            store
                .finish_store_file(
                    "vs_a",
                    "file-2",
                    FileStatus::Failed,
                    Some("invalid_file"),
                    Some("bad")
                )
                .await
                .unwrap()
        );
        assert!(
            !store
                .complete_store_file("vs_a", "file-2", &[chunk("x")], 1)
                .await
                .unwrap()
        );
        assert_eq!(store.store_chunks("vs_a").await.unwrap().len(), 2);
        // A failed file attached again is queued again, its error cleared.
        assert!(
            store
                .add_store_file(&vf("vs_a", "file-2"), None)
                .await
                .unwrap()
        );
        let again = store.store_file("vs_a", "file-2").await.unwrap().unwrap();
        assert_eq!(
            (again.status, again.error_code),
            (FileStatus::InProgress, None)
        );

        assert!(store.remove_store_file("vs_a", "file-1").await.unwrap());
        assert!(store.store_chunks("vs_a").await.unwrap().is_empty());
        assert!(store.delete_vector_store("vs_a").await.unwrap());
        assert!(store.vector_store("vs_a").await.unwrap().is_none());
        assert!(store.store_files("vs_a", None).await.unwrap().is_empty());
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
