-- Budgets and rate windows shared by several gateways (PostgreSQL; on
-- SQLite the tables stay empty: one gateway counts in memory). A window is
-- one counter of one user over one period: `used` is settled usage,
-- `reserved` what running requests hold. A reservation is one request's
-- holds, owned by a gateway and leased: a gateway renews its leases while
-- it lives, and any gateway returns the holds of an expired one.
CREATE TABLE budget_windows (
    user_name TEXT NOT NULL,
    counter BIGINT NOT NULL,
    start_ms BIGINT NOT NULL,
    used BIGINT NOT NULL,
    reserved BIGINT NOT NULL,
    PRIMARY KEY (user_name, counter, start_ms)
);

CREATE TABLE budget_reservations (
    id TEXT PRIMARY KEY,
    gateway TEXT NOT NULL,
    user_name TEXT NOT NULL,
    holds TEXT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE INDEX budget_reservations_by_expiry ON budget_reservations (expires_ms);
CREATE INDEX budget_reservations_by_gateway ON budget_reservations (gateway);
