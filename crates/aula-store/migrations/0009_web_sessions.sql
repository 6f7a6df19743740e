-- Signed-in web sessions, so that any gateway serves any signed-in page and
-- a restart signs nobody out. Neither the cookie's session id nor the
-- credential behind it is stored: the row is found by a hash of the id,
-- and the credential is encrypted with a key derived from the id (see
-- src/web_sessions.rs), so reading the database gives neither.
CREATE TABLE web_sessions (
    id_hash TEXT PRIMARY KEY,
    credential_hash TEXT NOT NULL,
    sealed TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    used_ms BIGINT NOT NULL
);

CREATE INDEX web_sessions_by_credential ON web_sessions (credential_hash, used_ms);
CREATE INDEX web_sessions_by_use ON web_sessions (used_ms);
