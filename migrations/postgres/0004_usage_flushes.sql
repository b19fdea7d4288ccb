-- Idempotent usage flushes. Every flush of the usage recorder carries an id (a ULID drawn when
-- the batch is formed and kept through its retries); the flush inserts it here in its own
-- transaction and writes nothing when the id is already present, so a flush whose COMMIT
-- succeeded but whose reply was lost is not counted twice when it is retried.
-- migrations/sqlite/0004_usage_flushes.sql is the same schema in the other dialect.
--
-- Retention pruning deletes ids older than the minute buckets' retention: a batch is retried
-- for minutes at most (MAX_RETRY_BATCHES in src/usage/mod.rs), never for days.
CREATE TABLE usage_flushes (
    flush_id   TEXT   PRIMARY KEY,
    -- When the flush was written (server clock, unix microseconds), for pruning.
    flushed_at BIGINT NOT NULL
);

CREATE INDEX usage_flushes_flushed_at ON usage_flushes (flushed_at);
