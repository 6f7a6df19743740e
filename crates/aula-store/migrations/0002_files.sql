-- Uploaded files (the Files API): the bytes live in the data directory's
-- files/ folder under the id; this row says whose they are and what for.
CREATE TABLE files (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    purpose TEXT NOT NULL,
    filename TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);

CREATE INDEX files_by_owner ON files (owner, created_ms);
