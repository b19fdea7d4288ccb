-- Optimistic concurrency and atomic leak reports. migrations/postgres/0005_token_versions.sql is
-- the same change in Postgres' dialect; keep them in step.

-- Bumped by every admin write of a token (update, rotation, revocation), never by usage flushes;
-- the admin API shows it as the token's etag, and an update that names an etag applies only if
-- it still matches.
ALTER TABLE tokens ADD COLUMN version BIGINT NOT NULL DEFAULT 1;

-- One row per token and UTC minute in which a rotated-out secret was presented and audited: its
-- primary key is what makes "at most one audit event per token per minute" hold across
-- concurrent Checks and replicas. A report deletes its token's older rows, so the table holds at
-- most one row per token that was reported.
CREATE TABLE retired_secret_reports (
    token_id TEXT   NOT NULL,
    -- Unix time in whole minutes (UTC).
    minute   BIGINT NOT NULL,
    PRIMARY KEY (token_id, minute)
);
