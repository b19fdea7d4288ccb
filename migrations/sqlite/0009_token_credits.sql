-- Usage credits (issue 16). migrations/postgres/0009_token_credits.sql is the same change in
-- Postgres' dialect; keep them in step.
--
-- NULL credits_remaining: the token is not metered (every token before this migration). The
-- balance lives on the token's row so that one conditional UPDATE both applies a due refill and
-- spends, serialised on the row lock across every replica (src/store/sql.rs, spend_credits): no
-- credit is spent twice, and a committed spend survives any crash.
ALTER TABLE tokens ADD COLUMN credits_remaining BIGINT;
-- What a refill tops the balance up to (0 when never refilled).
ALTER TABLE tokens ADD COLUMN credits_refill_amount BIGINT NOT NULL DEFAULT 0;
-- Microseconds between refills; NULL: never refilled.
ALTER TABLE tokens ADD COLUMN credits_refill_interval BIGINT;
-- Unix microseconds of the last refill (or of when the credits were set); NULL without credits.
ALTER TABLE tokens ADD COLUMN credits_refilled_at BIGINT;
