-- One schema for SQLite and PostgreSQL: portable types only, ids made by Aula,
-- times as Unix milliseconds.
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    source TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

CREATE TABLE user_groups (
    user_name TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    group_name TEXT NOT NULL,
    PRIMARY KEY (user_name, group_name)
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    user_name TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    hash TEXT NOT NULL UNIQUE,
    created_ms BIGINT NOT NULL,
    expires_ms BIGINT,
    revoked_ms BIGINT
);

CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    groups TEXT NOT NULL,
    model TEXT NOT NULL,
    admitted_ms BIGINT NOT NULL,
    status TEXT NOT NULL,
    prompt_tokens BIGINT,
    completion_tokens BIGINT,
    queue_ms DOUBLE PRECISION,
    ttft_ms DOUBLE PRECISION,
    duration_ms DOUBLE PRECISION
);
CREATE INDEX requests_by_time ON requests (admitted_ms);
CREATE INDEX requests_by_user ON requests (user_name, admitted_ms);

CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('auth_generation', 0);
