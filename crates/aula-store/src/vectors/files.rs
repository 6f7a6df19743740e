//! A vector store's files: attached, queued for ingestion, counted, given
//! attributes, completed with their chunks, removed.

use super::*;

impl Store {
    /// Attach a file, naming it in `batch` when given. A file attached
    /// already keeps its status and chunks (false) — unless it `failed` or
    /// was `cancelled`: attaching it again queues it again (true).
    pub async fn add_store_file(
        &self,
        f: &StoreFileRecord,
        batch: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let exists =
            sqlx::query("SELECT 1 FROM vector_store_files WHERE store_id = $1 AND file_id = $2")
                .bind(&f.store_id)
                .bind(&f.file_id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
        let mut queued = !exists;
        if exists {
            let again: Vec<String> = FileStatus::ALL
                .into_iter()
                .filter(|s| s.may_queue_again())
                .map(|s| format!("'{}'", s.as_str()))
                .collect();
            let r = sqlx::query(&format!(
                "UPDATE vector_store_files SET status = '{}', error_code = NULL, error_message = NULL, \
                 attributes = $1, chunking = $2 \
                 WHERE store_id = $3 AND file_id = $4 AND status IN ({})",
                FileStatus::InProgress.as_str(),
                again.join(", ")
            ))
            .bind(&f.attributes)
            .bind(&f.chunking)
            .bind(&f.store_id)
            .bind(&f.file_id)
            .execute(&mut *tx)
            .await?;
            queued = r.rows_affected() > 0;
        }
        if !exists {
            sqlx::query(&format!(
                "INSERT INTO vector_store_files ({FILE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ))
            .bind(&f.store_id)
            .bind(&f.file_id)
            .bind(f.status.as_str())
            .bind(&f.error_code)
            .bind(&f.error_message)
            .bind(&f.attributes)
            .bind(&f.chunking)
            .bind(f.usage_bytes)
            .bind(f.created_ms)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(b) = batch {
            let named = sqlx::query(
                "SELECT 1 FROM vector_store_batch_files WHERE batch_id = $1 AND file_id = $2",
            )
            .bind(b)
            .bind(&f.file_id)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
            if !named {
                sqlx::query("INSERT INTO vector_store_batch_files (store_id, batch_id, file_id) VALUES ($1, $2, $3)")
                    .bind(&f.store_id)
                    .bind(b)
                    .bind(&f.file_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(queued)
    }

    pub async fn store_file(
        &self,
        store_id: &str,
        file_id: &str,
    ) -> Result<Option<StoreFileRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {FILE_COLUMNS} FROM vector_store_files WHERE store_id = $1 AND file_id = $2"
        ))
        .bind(store_id)
        .bind(file_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(file_record).transpose()
    }

    /// A store's files (or one batch's), oldest first.
    pub async fn store_files(
        &self,
        store_id: &str,
        batch_id: Option<&str>,
    ) -> Result<Vec<StoreFileRecord>, StoreError> {
        let sql = match batch_id {
            Some(_) => {
                format!("SELECT {V_FILE_COLUMNS} {IN_BATCH} ORDER BY v.created_ms, v.file_id")
            }
            None => format!(
                "SELECT {FILE_COLUMNS} FROM vector_store_files WHERE store_id = $1 ORDER BY created_ms, file_id"
            ),
        };
        let mut q = sqlx::query(&sql).bind(store_id);
        if let Some(b) = batch_id {
            q = q.bind(b);
        }
        q.fetch_all(&self.pool)
            .await?
            .iter()
            .map(file_record)
            .collect()
    }

    /// Files waiting to be ingested, the oldest `limit` of each owner (at
    /// start: what a stop interrupted).
    pub async fn pending_store_files(
        &self,
        limit: i64,
    ) -> Result<Vec<StoreFileRecord>, StoreError> {
        Ok(self
            .pending_store_files_by_owner(limit)
            .await?
            .into_iter()
            .map(|(f, _)| f)
            .collect())
    }

    /// Files waiting for ingestion, oldest first, at most `limit` of each
    /// owner (5,000 in all), each with its store's owner (whose limits its
    /// embedding calls count against).
    pub async fn pending_store_files_by_owner(
        &self,
        limit: i64,
    ) -> Result<Vec<(StoreFileRecord, String)>, StoreError> {
        // The oldest `limit` of each owner, so that one owner's thousands
        // of files cannot hide another owner's one.
        sqlx::query(&format!(
            "SELECT {FILE_COLUMNS}, owner FROM (SELECT {V_FILE_COLUMNS}, s.owner AS owner, \
             ROW_NUMBER() OVER (PARTITION BY s.owner ORDER BY v.created_ms, v.store_id, v.file_id) AS rn \
             FROM vector_store_files v JOIN vector_stores s ON s.id = v.store_id \
             WHERE v.status = '{}') t WHERE rn <= {} \
             ORDER BY created_ms, store_id, file_id LIMIT 5000",
            FileStatus::InProgress.as_str(),
            limit.max(1)
        ))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((file_record(r)?, r.try_get::<String, _>(9)?)))
        .collect()
    }

    /// Claim a waiting file for ingestion by `gateway` (its `gateways.id`):
    /// only when no other gateway alive holds it. True when claimed. Of
    /// several gateways claiming one file, one succeeds.
    pub async fn claim_store_file(
        &self,
        store_id: &str,
        file_id: &str,
        gateway: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE vector_store_files SET claimed_by = $1 WHERE store_id = $2 AND file_id = $3 \
             AND status = $4 AND (claimed_by IS NULL OR claimed_by = $1 OR claimed_by NOT IN \
             (SELECT id FROM gateways WHERE seen_ms >= $5))",
        )
        .bind(gateway)
        .bind(store_id)
        .bind(file_id)
        .bind(FileStatus::InProgress.as_str())
        .bind(self.alive_since(crate::now_ms()))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Give back `gateway`'s claim on a file (done with, or paused).
    pub async fn release_store_file(
        &self,
        store_id: &str,
        file_id: &str,
        gateway: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE vector_store_files SET claimed_by = NULL \
             WHERE store_id = $1 AND file_id = $2 AND claimed_by = $3",
        )
        .bind(store_id)
        .bind(file_id)
        .bind(gateway)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Files `owner`'s stores have waiting for ingestion.
    pub async fn pending_store_files_of(&self, owner: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM vector_store_files v JOIN vector_stores s \
             ON s.id = v.store_id WHERE v.status = $1 AND s.owner = $2",
        )
        .bind(FileStatus::InProgress.as_str())
        .bind(owner)
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?)
    }

    pub async fn set_store_file_attributes(
        &self,
        store_id: &str,
        file_id: &str,
        attributes: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE vector_store_files SET attributes = $1 WHERE store_id = $2 AND file_id = $3",
        )
        .bind(attributes)
        .bind(store_id)
        .bind(file_id)
        .execute(&mut *tx)
        .await?;
        bump(&mut tx, store_id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Detach a file from a store with its chunks; false when it was not there.
    pub async fn remove_store_file(
        &self,
        store_id: &str,
        file_id: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM chunks WHERE store_id = $1 AND file_id = $2")
            .bind(store_id)
            .bind(file_id)
            .execute(&mut *tx)
            .await?;
        let r = sqlx::query("DELETE FROM vector_store_files WHERE store_id = $1 AND file_id = $2")
            .bind(store_id)
            .bind(file_id)
            .execute(&mut *tx)
            .await?;
        bump(&mut tx, store_id).await?;
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    /// The stores a file is attached to.
    pub async fn stores_with_file(&self, file_id: &str) -> Result<Vec<String>, StoreError> {
        sqlx::query("SELECT store_id FROM vector_store_files WHERE file_id = $1")
            .bind(file_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
    }

    /// The chunks of a file, its status `completed`, in one transaction;
    /// false (and nothing written) when the file is no longer
    /// `in_progress` in that store.
    pub async fn complete_store_file(
        &self,
        store_id: &str,
        file_id: &str,
        chunks: &[NewChunk],
        usage_bytes: i64,
    ) -> Result<bool, StoreError> {
        if let Some(c) = chunks.first() {
            self.ensure_dense_index(c.embedding.len()).await?;
        }
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE vector_store_files SET status = $1, usage_bytes = $2 \
             WHERE store_id = $3 AND file_id = $4 AND status = $5",
        )
        .bind(FileStatus::Completed.as_str())
        .bind(usage_bytes)
        .bind(store_id)
        .bind(file_id)
        .bind(FileStatus::InProgress.as_str())
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query("DELETE FROM chunks WHERE store_id = $1 AND file_id = $2")
            .bind(store_id)
            .bind(file_id)
            .execute(&mut *tx)
            .await?;
        // On PostgreSQL the search columns too (vectors::search).
        let insert = match (self.is_postgres(), self.pgvector()) {
            (false, _) => {
                "INSERT INTO chunks (store_id, file_id, seq, text, tokens, embedding) \
                 VALUES ($1, $2, $3, $4, $5, $6)"
            }
            (true, false) => {
                "INSERT INTO chunks (store_id, file_id, seq, text, tokens, embedding, tsv, nterms, dim) \
                 VALUES ($1, $2, $3, $4, $5, $6, ($7)::tsvector, $8, $9)"
            }
            (true, true) => {
                "INSERT INTO chunks (store_id, file_id, seq, text, tokens, embedding, tsv, nterms, dim, vec) \
                 VALUES ($1, $2, $3, $4, $5, $6, ($7)::tsvector, $8, $9, ($10)::vector)"
            }
        };
        for (seq, c) in chunks.iter().enumerate() {
            let mut q = sqlx::query(insert)
                .bind(store_id)
                .bind(file_id)
                .bind(seq as i64)
                .bind(&c.text)
                .bind(c.tokens)
                .bind(encode_vector(&c.embedding));
            if self.is_postgres() {
                q = q
                    .bind(super::search::tsvector(&c.terms))
                    .bind(c.terms.len() as i32)
                    .bind(c.embedding.len() as i32);
                if self.pgvector() {
                    // pgvector has no zero-dimensional vector: none is stored.
                    q = q.bind(
                        (!c.embedding.is_empty())
                            .then(|| super::search::vector_literal(&c.embedding)),
                    );
                }
            }
            q.execute(&mut *tx).await?;
        }
        bump(&mut tx, store_id).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Mark a file `failed` (or `cancelled`) with a reason, if it is still
    /// `in_progress`.
    pub async fn finish_store_file(
        &self,
        store_id: &str,
        file_id: &str,
        status: FileStatus,
        code: Option<&str>,
        message: Option<&str>,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE vector_store_files SET status = $1, error_code = $2, error_message = $3 \
             WHERE store_id = $4 AND file_id = $5 AND status = $6",
        )
        .bind(status.as_str())
        .bind(code)
        .bind(message)
        .bind(store_id)
        .bind(file_id)
        .bind(FileStatus::InProgress.as_str())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }
}
