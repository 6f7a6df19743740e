-- The gateways that use this database: one row each, its heartbeat
-- (`seen_ms`) renewed every few seconds. A row not renewed for the stale
-- time is a gateway that died; the next gateway to start removes it.
CREATE TABLE gateways (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    address TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    seen_ms BIGINT NOT NULL
);
