-- Token metadata and suspension (issue 16). migrations/postgres/0008_token_metadata_and_suspension.sql
-- is the same change in Postgres' dialect; keep them in step.

-- The caller's key-value pairs as a JSON text object of strings; bounded by the admin API
-- (at most 32 entries, 8 KiB in all) and returned by an allowed Check.
ALTER TABLE tokens ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';

-- Set while the token is suspended (unix microseconds, UTC); NULL when it is not. Check denies
-- a suspended token until it is resumed, which clears both columns.
ALTER TABLE tokens ADD COLUMN suspended_at BIGINT;
ALTER TABLE tokens ADD COLUMN suspend_reason TEXT NOT NULL DEFAULT '';
