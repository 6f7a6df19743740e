-- Fine-tuning jobs (the OpenAI fine-tuning API). A job belongs to its
-- owner; `spec` is what was asked (files, suffix, seed, hyperparameters,
-- LoRA settings) as JSON, `error` the failure as JSON ({code, message,
-- param}). A succeeded job names its model (`ft:BASE:USER:SUFFIX:ID`),
-- visible to the owner and to `shared_groups` (a JSON list) until
-- `deleted_ms` is set.
CREATE TABLE fine_tuning_jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    owner_role TEXT NOT NULL,
    status TEXT NOT NULL,
    base_model TEXT NOT NULL,
    fine_tuned_model TEXT,
    spec TEXT NOT NULL,
    error TEXT,
    trained_tokens BIGINT NOT NULL,
    planned_bytes BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    started_ms BIGINT,
    finished_ms BIGINT,
    estimated_finish_ms BIGINT,
    shared_groups TEXT NOT NULL,
    deleted_ms BIGINT
);

CREATE INDEX fine_tuning_jobs_by_owner ON fine_tuning_jobs (owner, created_ms);
CREATE INDEX fine_tuning_jobs_by_status ON fine_tuning_jobs (status, created_ms);

-- What a job said as it ran: messages and metrics (step, loss, learning
-- rate, tokens/s as JSON in `data`), numbered per job.
CREATE TABLE fine_tuning_events (
    job_id TEXT NOT NULL REFERENCES fine_tuning_jobs(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    level TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT,
    PRIMARY KEY (job_id, seq)
);

CREATE TABLE fine_tuning_checkpoints (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES fine_tuning_jobs(id) ON DELETE CASCADE,
    step BIGINT NOT NULL,
    metrics TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);

CREATE INDEX fine_tuning_checkpoints_by_job ON fine_tuning_checkpoints (job_id, step);
