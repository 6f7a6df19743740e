-- Search inside PostgreSQL (installed at start on PostgreSQL only, like
-- budgets.sql; SQLite keeps a store's index in the gateway's memory).
--
-- `tsv` holds a chunk's terms as Aula's own analyser cut them (the same
-- stems and stop words as the in-memory BM25), each with as many positions
-- as it occurs (at most 256), so that BM25 can be computed in SQL from
-- the GIN index's candidates; `nterms` is the chunk's length in terms;
-- `dim` its embedding's dimensions. The pgvector column `vec` is added
-- separately, only where the extension can be created.
ALTER TABLE chunks ADD COLUMN IF NOT EXISTS tsv tsvector;
ALTER TABLE chunks ADD COLUMN IF NOT EXISTS nterms INTEGER;
ALTER TABLE chunks ADD COLUMN IF NOT EXISTS dim INTEGER;
CREATE INDEX IF NOT EXISTS chunks_tsv ON chunks USING gin (tsv);
