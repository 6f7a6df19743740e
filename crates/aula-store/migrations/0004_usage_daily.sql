-- Daily rollups of the ledger: one row per UTC day, user, group list, model
-- and status. Usage over a week or a term reads these for the days that are
-- rolled up and the raw `requests` rows only for the days since
-- (`meta.usage_rolled_through_day`), so it stays fast for a large class.
CREATE TABLE usage_daily (
    day BIGINT NOT NULL,
    user_name TEXT NOT NULL,
    groups TEXT NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL,
    requests BIGINT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    queue_sum DOUBLE PRECISION NOT NULL,
    queue_n BIGINT NOT NULL,
    ttft_sum DOUBLE PRECISION NOT NULL,
    ttft_n BIGINT NOT NULL,
    PRIMARY KEY (day, user_name, groups, model, status)
);
CREATE INDEX usage_daily_by_user ON usage_daily (user_name, day);
INSERT INTO meta (key, value) VALUES ('usage_rolled_through_day', -1);
