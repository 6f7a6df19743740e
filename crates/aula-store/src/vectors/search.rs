//! Searching a vector store inside PostgreSQL, so that every gateway
//! searches the same index and a store need not fit in memory.
//!
//! The rules:
//! * **Lexical** is the same Okapi BM25 as the in-memory index (Lucene's
//!   idf, k1 0.9, b 0.4), computed in SQL: the chunk's terms are stored as
//!   a `tsvector` of the caller's analysed terms (see [`tsvector`]), the
//!   GIN index finds the chunks holding any query term, and each one's term
//!   frequencies are read from its own `tsvector` (only the query's
//!   lexemes are kept: `setweight` + `ts_filter`). N, the average length
//!   and each term's document frequency count the whole store (callers
//!   keep them while the store's generation stays); filters only narrow
//!   the candidates. MaxScore's pruning keeps it exact while skipping the
//!   chunks that hold only the commonest terms ([`Store::lexical_search`]). A term longer than [`MAX_TERM_BYTES`] is
//!   left out of the index and of queries; a term counts at most 256 times
//!   in one chunk (PostgreSQL's limit on positions); a query looks up at
//!   most [`MAX_QUERY_TERMS`] distinct terms.
//! * **Dense** uses pgvector, where the extension could be created:
//!   cosine distance on an HNSW index per embedding dimension (an
//!   expression index on `vec::vector(D)`, partial on `dim = D`), searched
//!   with `hnsw.iterative_scan = relaxed_order` so that a store's own
//!   chunks are found even when the index holds many stores. HNSW is
//!   approximate: `hnsw.ef_search` is [`EF_SEARCH`].
//! * Results are keyed by [`ChunkKey`], whose order (the file's attach
//!   time, the file, the chunk) is the in-memory index's insertion order,
//!   so ties break the same way in both.
//! * Chunks exist only for completed files (written with the file's
//!   `completed` in one transaction, deleted with the file), so every row
//!   of a store is searchable.

use crate::db::{Store, StoreError};
use sqlx::Row;

pub(crate) const SEARCH_SQL: &str = include_str!("search.sql");

/// Longest term indexed (PostgreSQL refuses lexemes over 2 KiB).
pub const MAX_TERM_BYTES: usize = 255;
/// Positions PostgreSQL keeps per lexeme: a term's frequency in a chunk
/// counts up to this.
pub const MAX_TF: usize = 256;
/// HNSW's candidate list while searching.
pub const EF_SEARCH: usize = 200;
/// BM25's parameters (the in-memory index's: `aula_rag::lexical`).
pub const K1: f64 = 0.9;
pub const B: f64 = 0.4;

/// Lucene's idf of a term held by `df` of `n` chunks.
pub fn idf(n: f64, df: f64) -> f64 {
    (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
}

/// A chunk's place: its file's attach time, its file, its position there.
pub type ChunkKey = (i64, String, i64);

/// A found chunk's text and its file's name and attributes.
#[derive(Debug, Clone)]
pub struct ChunkHit {
    pub key: ChunkKey,
    pub filename: String,
    pub attributes: String,
    pub text: String,
}

/// A store's figures that BM25 needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LexicalStats {
    pub chunks: f64,
    pub avg_terms: f64,
}

/// A chunk whose search columns are missing (written before they existed).
#[derive(Debug, Clone)]
pub struct UnindexedChunk {
    pub store_id: String,
    pub file_id: String,
    pub seq: i64,
    pub text: String,
    pub embedding: Vec<f32>,
}

/// The `tsvector` literal of a chunk's analysed terms: each distinct term
/// once, with positions 1..=tf (capped at [`MAX_TF`]); terms over
/// [`MAX_TERM_BYTES`] left out. Deterministic (terms sorted).
pub fn tsvector(terms: &[String]) -> String {
    let mut tf: std::collections::BTreeMap<&str, usize> = Default::default();
    for t in terms {
        if !t.is_empty() && t.len() <= MAX_TERM_BYTES {
            *tf.entry(t.as_str()).or_default() += 1;
        }
    }
    let mut out = String::new();
    for (t, n) in tf {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&quote(t));
        out.push(':');
        let positions: Vec<String> = (1..=n.min(MAX_TF)).map(|p| p.to_string()).collect();
        out.push_str(&positions.join(","));
    }
    out
}

/// A lexeme quoted for `tsvector`/`tsquery` input.
fn quote(t: &str) -> String {
    format!("'{}'", t.replace('\\', "\\\\").replace('\'', "''"))
}

/// pgvector's text form of a vector.
pub fn vector_literal(v: &[f32]) -> String {
    let parts: Vec<String> = v
        .iter()
        .map(|x| {
            if x.is_finite() {
                x.to_string()
            } else {
                "0".into()
            }
        })
        .collect();
    format!("[{}]", parts.join(","))
}

/// Most distinct terms of one query looked up (each is an index lookup);
/// the first ones in the query count.
pub const MAX_QUERY_TERMS: usize = 1_024;

/// The distinct query terms the database can match (the first
/// [`MAX_QUERY_TERMS`]), sorted.
pub fn query_terms(terms: &[String]) -> Vec<&str> {
    let mut seen = std::collections::HashSet::new();
    let mut t: Vec<&str> = terms
        .iter()
        .map(String::as_str)
        .filter(|t| !t.is_empty() && t.len() <= MAX_TERM_BYTES && !t.contains(' '))
        .filter(|t| seen.insert(*t))
        .take(MAX_QUERY_TERMS)
        .collect();
    t.sort_unstable();
    t
}

/// ` AND c.file_id = ANY(...)` for a filter's files (`$n`), or nothing.
fn files_clause(files: Option<&[String]>, n: usize) -> String {
    match files {
        Some(_) => format!(" AND c.file_id = ANY(string_to_array(${n}, ' '))"),
        None => String::new(),
    }
}

fn joined_files(files: Option<&[String]>) -> Option<String> {
    files.map(|f| f.join(" "))
}

/// Create the search columns and indexes; then pgvector's, where it can
/// be: true when dense search can run in the database.
pub(crate) async fn install(pool: &sqlx::AnyPool) -> Result<bool, StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(4708)")
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(SEARCH_SQL).execute(&mut *tx).await?;
    tx.commit().await?;
    let available: bool =
        sqlx::query("SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector')")
            .fetch_one(pool)
            .await?
            .try_get(0)?;
    if !available {
        tracing::warn!(
            "PostgreSQL has no pgvector extension: vector stores search by meaning in each gateway's \
             memory (full-text search runs in the database). Install pgvector (Debian 13: \
             postgresql-17-pgvector; or PostgreSQL's own apt repository) for search inside the database"
        );
        return Ok(false);
    }
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(4708)")
        .execute(&mut *tx)
        .await?;
    let enabled = async {
        sqlx::raw_sql(
            "CREATE EXTENSION IF NOT EXISTS vector; \
             ALTER TABLE chunks ADD COLUMN IF NOT EXISTS vec vector;",
        )
        .execute(&mut *tx)
        .await
    }
    .await;
    match enabled {
        Ok(_) => {
            tx.commit().await?;
            Ok(true)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            tracing::warn!(
                "pgvector is installed but could not be enabled ({e}): vector stores search by meaning \
                 in each gateway's memory. A superuser can run `CREATE EXTENSION vector;` in Aula's database"
            );
            Ok(false)
        }
    }
}

impl Store {
    /// Does this database search vector stores itself? (lexical, dense)
    pub fn searches_in_database(&self) -> (bool, bool) {
        (self.is_postgres(), self.pgvector())
    }

    /// The HNSW index for `dim`-dimensional embeddings, made once.
    pub(crate) async fn ensure_dense_index(&self, dim: usize) -> Result<(), StoreError> {
        if !self.pgvector() || dim == 0 || self.dense_index_made(dim) {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(4709)")
            .execute(&mut *tx)
            .await?;
        let create = format!(
            "CREATE INDEX IF NOT EXISTS chunks_vec_{dim} ON chunks \
             USING hnsw ((vec::vector({dim})) vector_cosine_ops) WHERE dim = {dim}"
        );
        sqlx::query(&create).execute(&mut *tx).await?;
        tx.commit().await?;
        self.mark_dense_index(dim);
        Ok(())
    }

    /// What BM25 needs of the whole store: its chunks and their average
    /// length in terms (one pass over the store: callers keep it while the
    /// store's generation stays).
    pub async fn lexical_stats(&self, store_id: &str) -> Result<LexicalStats, StoreError> {
        let r = sqlx::query(
            "SELECT CAST(count(*) AS FLOAT8), CAST(COALESCE(avg(nterms), 0) AS FLOAT8) \
             FROM chunks WHERE store_id = $1",
        )
        .bind(store_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(LexicalStats {
            chunks: r.try_get(0)?,
            avg_terms: r.try_get(1)?,
        })
    }

    /// How many of the store's chunks hold each term (in the order given).
    pub async fn term_dfs(&self, store_id: &str, terms: &[String]) -> Result<Vec<f64>, StoreError> {
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT t.i, CAST((SELECT count(*) FROM chunks c WHERE c.store_id = $1 \
               AND c.tsv @@ CAST(quote_literal(t.term) AS tsquery)) AS FLOAT8) \
             FROM unnest(string_to_array($2, ' ')) WITH ORDINALITY AS t(term, i) ORDER BY t.i",
        )
        .bind(store_id)
        .bind(terms.join(" "))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get::<f64, _>(1)?)).collect()
    }

    /// BM25 over the store's chunks holding any of the `weighted` terms
    /// (each with its idf; analysed as the chunks were), best first, at
    /// most `limit`; only chunks of `files` when given. `avg_terms` is the
    /// store's average chunk length ([`Store::lexical_stats`]).
    ///
    /// Exact, with MaxScore's pruning: a term adds at most idf x (k1 + 1)
    /// to a chunk's score. The chunks holding the rarer half of the terms
    /// are scored first; their `limit`-th score is a floor for the final
    /// one, so the most common terms whose bounds together stay under it
    /// cannot bring a chunk into the results on their own, and chunks
    /// holding only those are never read. The chunks holding the other
    /// common terms but none of the rarer half are scored second; none is
    /// scored twice.
    pub async fn lexical_search(
        &self,
        store_id: &str,
        avg_terms: f64,
        weighted: &[(String, f64)],
        files: Option<&[String]>,
        limit: usize,
    ) -> Result<Vec<(ChunkKey, f32)>, StoreError> {
        let mut w: Vec<&(String, f64)> = weighted
            .iter()
            .filter(|(t, idf)| !t.is_empty() && !t.contains(' ') && *idf > 0.0)
            .collect();
        if w.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        // Most common (lowest idf) first.
        w.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        let half = w.len() / 2;
        if half == 0 {
            return self
                .bm25(store_id, avg_terms, &w, &w, &[], files, limit)
                .await;
        }
        let mut first = self
            .bm25(store_id, avg_terms, &w, &w[half..], &[], files, limit)
            .await?;
        let floor = if first.len() == limit {
            first.last().map_or(0.0, |(_, s)| f64::from(*s))
        } else {
            0.0
        };
        // A margin for the scores' rounding to f32.
        let floor = floor * (1.0 - 1e-4);
        let (mut skip, mut bound) = (0, 0.0);
        while skip < half && bound + w[skip].1 * (K1 + 1.0) < floor {
            bound += w[skip].1 * (K1 + 1.0);
            skip += 1;
        }
        if skip < half {
            // The chunks holding a common term that may matter but none of
            // the rarer half (those were all scored above).
            let rest = self
                .bm25(
                    store_id,
                    avg_terms,
                    &w,
                    &w[skip..half],
                    &w[half..],
                    files,
                    limit,
                )
                .await?;
            first.extend(rest);
            first.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            first.truncate(limit);
        }
        Ok(first)
    }

    /// BM25 scores (every term of `all`) of the chunks holding any term of
    /// `candidates` and none of `excluded`.
    #[allow(clippy::too_many_arguments)]
    async fn bm25(
        &self,
        store_id: &str,
        avg_terms: f64,
        all: &[&(String, f64)],
        candidates: &[&(String, f64)],
        excluded: &[&(String, f64)],
        files: Option<&[String]>,
        limit: usize,
    ) -> Result<Vec<(ChunkKey, f32)>, StoreError> {
        let terms: Vec<&str> = all.iter().map(|(t, _)| t.as_str()).collect();
        let idfs: Vec<String> = all.iter().map(|(_, i)| i.to_string()).collect();
        let tsquery: Vec<String> = candidates.iter().map(|(t, _)| quote(t)).collect();
        let excluded: Vec<String> = excluded.iter().map(|(t, _)| quote(t)).collect();
        let exclude = if excluded.is_empty() {
            String::new()
        } else {
            format!(
                " AND NOT c.tsv @@ CAST(${} AS tsquery)",
                if files.is_some() { 7 } else { 6 }
            )
        };
        let sql = format!(
            "WITH q AS ( \
               SELECT term, CAST(idf AS FLOAT8) AS idf \
               FROM unnest(string_to_array($2, ' '), string_to_array($3, ' ')) AS q(term, idf)) \
             SELECT v.created_ms, c.file_id, CAST(c.seq AS BIGINT), \
               CAST(SUM(q.idf * u.tf * {k1p} / (u.tf + {K1} * (1 - {B} + {B} * c.nterms / GREATEST(CAST($5 AS FLOAT8), 1e-9)))) AS FLOAT8) AS score \
             FROM chunks c \
             JOIN vector_store_files v ON v.store_id = c.store_id AND v.file_id = c.file_id \
             CROSS JOIN LATERAL ( \
               SELECT lexeme, CAST(COALESCE(array_length(positions, 1), 1) AS FLOAT8) AS tf \
               FROM unnest(ts_filter(setweight(c.tsv, 'A', string_to_array($2, ' ')), '{{a}}'))) u \
             JOIN q ON q.term = u.lexeme \
             WHERE c.store_id = $1 AND c.tsv @@ CAST($4 AS tsquery){files}{exclude} \
             GROUP BY v.created_ms, c.file_id, c.seq \
             ORDER BY score DESC, v.created_ms, c.file_id, c.seq LIMIT {limit}",
            k1p = K1 + 1.0,
            files = files_clause(files, 6),
        );
        let mut q = sqlx::query(&sql)
            .bind(store_id)
            .bind(terms.join(" "))
            .bind(idfs.join(" "))
            .bind(tsquery.join(" | "))
            .bind(avg_terms);
        if let Some(f) = joined_files(files) {
            q = q.bind(f);
        }
        if !excluded.is_empty() {
            q = q.bind(excluded.join(" | "));
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(keyed).collect()
    }

    /// The store's chunks nearest `vector` by cosine similarity (pgvector),
    /// best first, at most `limit`; only chunks of `files` when given.
    pub async fn dense_search(
        &self,
        store_id: &str,
        vector: &[f32],
        files: Option<&[String]>,
        limit: usize,
    ) -> Result<Vec<(ChunkKey, f32)>, StoreError> {
        let dim = vector.len();
        if !self.pgvector() || dim == 0 || limit == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        let ef = format!("SET LOCAL hnsw.ef_search = {EF_SEARCH}");
        sqlx::query(&ef).execute(&mut *tx).await?;
        sqlx::query("SET LOCAL hnsw.iterative_scan = relaxed_order")
            .execute(&mut *tx)
            .await?;
        let sql = format!(
            "SELECT v.created_ms, n.file_id, CAST(n.seq AS BIGINT), CAST(1 - n.d AS FLOAT8) \
             FROM ( \
               SELECT c.file_id, c.seq, c.vec::vector({dim}) <=> ($2)::vector({dim}) AS d \
               FROM chunks c WHERE c.store_id = $1 AND c.dim = {dim}{files} \
               ORDER BY c.vec::vector({dim}) <=> ($2)::vector({dim}) LIMIT {limit}) n \
             JOIN vector_store_files v ON v.store_id = $1 AND v.file_id = n.file_id",
            files = files_clause(files, 3),
        );
        let mut q = sqlx::query(&sql)
            .bind(store_id)
            .bind(vector_literal(vector));
        if let Some(f) = joined_files(files) {
            q = q.bind(f);
        }
        let rows = q.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let mut out: Vec<(ChunkKey, f32)> = rows.iter().map(keyed).collect::<Result<_, _>>()?;
        // Iterative scans may return neighbours slightly out of order.
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// The text, file name and attributes of these chunks of a store, in
    /// the order asked (a chunk that has gone meanwhile is left out).
    pub async fn chunk_hits(
        &self,
        store_id: &str,
        keys: &[ChunkKey],
    ) -> Result<Vec<ChunkHit>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let which: Vec<String> = (0..keys.len())
            .map(|i| format!("(c.file_id = ${} AND c.seq = ${})", 2 * i + 2, 2 * i + 3))
            .collect();
        let sql = format!(
            "SELECT v.created_ms, c.file_id, CAST(c.seq AS BIGINT), COALESCE(f.filename, c.file_id), \
             v.attributes, c.text \
             FROM chunks c JOIN vector_store_files v ON v.store_id = c.store_id AND v.file_id = c.file_id \
             LEFT JOIN files f ON f.id = c.file_id \
             WHERE c.store_id = $1 AND ({})",
            which.join(" OR ")
        );
        let mut q = sqlx::query(&sql).bind(store_id);
        for (_, file, seq) in keys {
            q = q.bind(file.as_str()).bind(*seq as i32);
        }
        let rows = q.fetch_all(&self.pool).await?;
        let mut found: std::collections::HashMap<ChunkKey, ChunkHit> = Default::default();
        for r in &rows {
            let key: ChunkKey = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
            found.insert(
                key.clone(),
                ChunkHit {
                    key,
                    filename: r.try_get(3)?,
                    attributes: r.try_get(4)?,
                    text: r.try_get(5)?,
                },
            );
        }
        Ok(keys.iter().filter_map(|k| found.remove(k)).collect())
    }

    /// Chunks whose search columns are missing (at most `limit`).
    pub async fn unindexed_chunks(&self, limit: i64) -> Result<Vec<UnindexedChunk>, StoreError> {
        if !self.is_postgres() {
            return Ok(Vec::new());
        }
        // An empty embedding has no vector to store (dim 0 marks it done).
        let vec_missing = if self.pgvector() {
            " OR (vec IS NULL AND dim > 0)"
        } else {
            ""
        };
        let rows = sqlx::query(&format!(
            "SELECT store_id, file_id, CAST(seq AS BIGINT), text, embedding FROM chunks \
             WHERE tsv IS NULL OR nterms IS NULL OR dim IS NULL{vec_missing} \
             ORDER BY store_id, file_id, seq LIMIT {limit}"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let emb: String = r.try_get(4)?;
                Ok(UnindexedChunk {
                    store_id: r.try_get(0)?,
                    file_id: r.try_get(1)?,
                    seq: r.try_get(2)?,
                    text: r.try_get(3)?,
                    embedding: super::decode_vector(&emb)?,
                })
            })
            .collect()
    }

    /// Write a chunk's search columns from its analysed `terms`.
    pub async fn index_chunk(
        &self,
        c: &UnindexedChunk,
        terms: &[String],
    ) -> Result<(), StoreError> {
        self.ensure_dense_index(c.embedding.len()).await?;
        let (set_vec, vec) = if self.pgvector() && !c.embedding.is_empty() {
            (", vec = ($6)::vector", Some(vector_literal(&c.embedding)))
        } else {
            ("", None)
        };
        let sql = format!(
            "UPDATE chunks SET tsv = ($1)::tsvector, nterms = $2, dim = $3{set_vec} \
             WHERE store_id = $4 AND file_id = $5 AND seq = {}",
            c.seq
        );
        let mut q = sqlx::query(&sql)
            .bind(tsvector(terms))
            .bind(terms.len() as i32)
            .bind(c.embedding.len() as i32)
            .bind(c.store_id.as_str())
            .bind(c.file_id.as_str());
        if let Some(v) = vec {
            q = q.bind(v);
        }
        q.execute(&self.pool).await?;
        Ok(())
    }
}

fn keyed(r: &sqlx::any::AnyRow) -> Result<(ChunkKey, f32), StoreError> {
    let score: f64 = r.try_get(3)?;
    Ok(((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?), score as f32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsvectors_count_terms_and_quote_them() {
        let terms: Vec<String> = ["cell", "plant", "cell", "it's", &"x".repeat(300)]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(tsvector(&terms), "'cell':1,2 'it''s':1 'plant':1");
        let many = vec!["a".to_string(); 300];
        assert!(tsvector(&many).ends_with(",256"));
        assert_eq!(vector_literal(&[1.0, -0.5, f32::NAN]), "[1,-0.5,0]");
        let q: Vec<String> = ["b", "a", "b", ""].iter().map(|s| s.to_string()).collect();
        assert_eq!(query_terms(&q), ["a", "b"]);
    }
}
