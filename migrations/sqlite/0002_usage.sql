-- Usage statistics, written by the usage recorder's flush (one transaction per second per
-- replica) and read by ListUsage. migrations/postgres/0002_usage.sql is the same schema in Postgres'
-- dialect; keep them in step.
--
-- Counters are only ever added to (`calls = calls + excluded.calls`), so any number of replicas
-- flush into the same rows and the sums stay right. Timestamps are BIGINT unix microseconds
-- (UTC), like everywhere else; a minute or day bucket is keyed by the instant it starts.
-- No foreign keys to tokens: the flush checks the token row itself (it locks it to learn its
-- rotation), and rotation deletes a token's rows in its own transaction.

-- Calls per token, endpoint and UTC minute: the last 24 hours, kept for the retention window.
CREATE TABLE usage_minutes (
    token_id TEXT   NOT NULL,
    minute   BIGINT NOT NULL,
    endpoint TEXT   NOT NULL,
    calls    BIGINT NOT NULL,
    allowed  BIGINT NOT NULL,
    PRIMARY KEY (token_id, minute, endpoint)
);

-- Pruning by age.
CREATE INDEX usage_minutes_minute ON usage_minutes (minute);

-- Calls and reported outcomes per token, endpoint and UTC day: totals, top endpoints, the
-- daily series; kept a year.
CREATE TABLE usage_days (
    token_id         TEXT   NOT NULL,
    day              BIGINT NOT NULL,
    endpoint         TEXT   NOT NULL,
    calls            BIGINT NOT NULL,
    allowed          BIGINT NOT NULL,
    -- From ReportUsage: how many reports, how many with an HTTP status below 400, and the sum
    -- of their durations (microseconds), so the mean is exact across replicas.
    reports          BIGINT NOT NULL,
    report_successes BIGINT NOT NULL,
    report_micros    BIGINT NOT NULL,
    PRIMARY KEY (token_id, day, endpoint)
);

CREATE INDEX usage_days_day ON usage_days (day);

-- A sample of recent calls: each flush keeps the newest few per token.
CREATE TABLE usage_recent_calls (
    id         INTEGER   PRIMARY KEY,
    token_id   TEXT      NOT NULL,
    time       BIGINT    NOT NULL,
    endpoint   TEXT      NOT NULL,
    permission TEXT      NOT NULL,
    allowed    BOOLEAN   NOT NULL,
    -- `allowed`, or the deny reason's snake_case name.
    reason     TEXT      NOT NULL,
    client_ip  TEXT      NOT NULL,
    user_agent TEXT      NOT NULL
);

CREATE INDEX usage_recent_calls_token_time ON usage_recent_calls (token_id, time);
CREATE INDEX usage_recent_calls_time ON usage_recent_calls (time);

-- The newest use of each token; a flush replaces it only with a newer one.
CREATE TABLE usage_last_use (
    token_id   TEXT   PRIMARY KEY,
    time       BIGINT NOT NULL,
    client_ip  TEXT   NOT NULL,
    user_agent TEXT   NOT NULL
);

-- Dormant tokens (`unused_for`) and the dormancy gauge.
CREATE INDEX tokens_last_used_at ON tokens (last_used_at);
