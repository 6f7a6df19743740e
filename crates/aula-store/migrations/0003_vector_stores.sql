-- Vector stores (retrieval over course material). A store belongs to its
-- owner and may be shared, read-only, with groups; its files are Files API
-- files, each ingested into chunks with their embedding (little-endian f32,
-- base64: one portable type for SQLite and PostgreSQL). `generation` grows
-- whenever the store's searchable chunks change, so that every gateway
-- sharing the database knows when its in-memory index is stale.
CREATE TABLE vector_stores (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    owner_role TEXT NOT NULL,
    owner_groups TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT,
    metadata TEXT NOT NULL,
    chunking TEXT NOT NULL,
    generation BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    last_active_ms BIGINT NOT NULL
);

CREATE INDEX vector_stores_by_owner ON vector_stores (owner, created_ms);

CREATE TABLE vector_store_shares (
    store_id TEXT NOT NULL REFERENCES vector_stores(id) ON DELETE CASCADE,
    group_name TEXT NOT NULL,
    PRIMARY KEY (store_id, group_name)
);

CREATE INDEX vector_store_shares_by_group ON vector_store_shares (group_name);

CREATE TABLE vector_store_files (
    store_id TEXT NOT NULL REFERENCES vector_stores(id) ON DELETE CASCADE,
    file_id TEXT NOT NULL,
    status TEXT NOT NULL,
    error_code TEXT,
    error_message TEXT,
    attributes TEXT NOT NULL,
    chunking TEXT NOT NULL,
    usage_bytes BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (store_id, file_id)
);

CREATE INDEX vector_store_files_by_status ON vector_store_files (status);
CREATE INDEX vector_store_files_by_file ON vector_store_files (file_id);

-- The files each batch named (a file may be named by several batches).
CREATE TABLE vector_store_batch_files (
    store_id TEXT NOT NULL REFERENCES vector_stores(id) ON DELETE CASCADE,
    batch_id TEXT NOT NULL,
    file_id TEXT NOT NULL,
    PRIMARY KEY (batch_id, file_id)
);

CREATE TABLE chunks (
    store_id TEXT NOT NULL,
    file_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    text TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    embedding TEXT NOT NULL,
    PRIMARY KEY (store_id, file_id, seq),
    FOREIGN KEY (store_id, file_id) REFERENCES vector_store_files(store_id, file_id) ON DELETE CASCADE
);
