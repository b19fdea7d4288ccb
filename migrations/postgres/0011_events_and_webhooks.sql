-- Lifecycle events, webhooks and leak reports (issue 17).
-- migrations/sqlite/0011_events_and_webhooks.sql is the same change in SQLite's dialect; keep
-- them in step.

-- The outbox: every lifecycle event, written in the same transaction as the change that caused
-- it, so none is lost on a crash and none is sent for a rolled-back change. Pruned after
-- TESSERA_EVENT_RETENTION_DAYS.
CREATE TABLE events (
    -- The commit order, for WatchEvents' cursor and for paging; a reader waits for
    -- in-flight inserts (LOCK TABLE … IN SHARE MODE) so it never skips one.
    seq          BIGSERIAL PRIMARY KEY,
    -- `evt_` and a ULID: the public id (a delivery's `webhook-id`).
    id           TEXT   NOT NULL UNIQUE,
    type         TEXT   NOT NULL,
    tenant       TEXT   NOT NULL,
    time         BIGINT NOT NULL,
    token_id     TEXT,
    principal_id TEXT,
    -- The resource as it was at commit, a JSON object (src/domain/event.rs); never a secret.
    data         TEXT   NOT NULL
);
CREATE INDEX events_tenant_seq ON events (tenant, seq);
CREATE INDEX events_time ON events (time);

CREATE TABLE webhooks (
    -- `wh_` and a ULID.
    id            TEXT    PRIMARY KEY,
    tenant        TEXT    NOT NULL,
    url           TEXT    NOT NULL,
    -- The event types it receives, each between commas (`,token.created,token.revoked,`), so
    -- one LIKE matches a type on both backends; empty: every type.
    event_types   TEXT    NOT NULL,
    description   TEXT    NOT NULL,
    -- The signing secret sealed with the key-encryption key, as token signing keys are
    -- (src/domain/signature.rs); never the secret itself.
    sealed_secret BYTEA   NOT NULL,
    secret_hint   TEXT    NOT NULL,
    disabled      BOOLEAN NOT NULL,
    -- Set when a delivery exhausted its retries (with a `webhook.failing` event); cleared by a
    -- later success or by resuming the webhook.
    failing_since BIGINT,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL
);
CREATE INDEX webhooks_tenant_id ON webhooks (tenant, id);

-- One row per event and webhook it matched, inserted with the event (the same statement reads
-- the tenant's webhooks), so a delivery exists exactly when its event committed.
CREATE TABLE webhook_deliveries (
    id              BIGSERIAL PRIMARY KEY,
    webhook_id      TEXT    NOT NULL,
    event_seq       BIGINT  NOT NULL,
    -- `pending`, `delivered` or `failed`.
    state           TEXT    NOT NULL,
    attempts        INTEGER NOT NULL,
    next_attempt_at BIGINT  NOT NULL,
    -- A replica claimed it until then (its attempt in flight); another may take it after.
    leased_until    BIGINT,
    last_attempt_at BIGINT,
    last_status     INTEGER,
    last_error      TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL,
    delivered_at    BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, id);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_seq);

-- The expiry notices sent (`token.expiring` 7 days and 1 day before, `token.expired`): one row
-- per token, kind and expiry, so each is sent once per expiry, and again after the expiry moves.
CREATE TABLE token_expiry_notices (
    token_id   TEXT   NOT NULL,
    -- `expiring_7d`, `expiring_1d` or `expired`.
    kind       TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    sent_at    BIGINT NOT NULL,
    PRIMARY KEY (token_id, kind, expires_at)
);

-- The refill period (its `credits_refilled_at`) whose `credits.low` was sent, so it is sent once
-- per period.
ALTER TABLE tokens ADD COLUMN credits_low_period BIGINT;

-- What a leak report does to a live token of the tenant: `revoke` or `notify`.
ALTER TABLE tenant_policies ADD COLUMN leak_action TEXT NOT NULL DEFAULT 'revoke';
