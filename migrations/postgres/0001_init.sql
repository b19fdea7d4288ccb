-- Tessera's schema on Postgres. migrations/sqlite/0001_init.sql is the same schema in SQLite's
-- dialect; the store runs one set of queries against both, so keep them in step.
--
-- Every timestamp is BIGINT unix microseconds (UTC): one exact, comparable representation in both
-- dialects (SQLite has no timestamp type, and TIMESTAMPTZ would make the two backends decode
-- differently). Lists (permissions, roles, allowed IPs) are JSON text arrays of the canonical
-- strings the domain parsers accept, parsed again on every read.

CREATE TABLE principals (
    tenant                TEXT    NOT NULL,
    id                    TEXT    NOT NULL,
    permissions           TEXT    NOT NULL,
    disabled              BOOLEAN NOT NULL,
    -- NULL: the principal sets no rate limit of its own.
    rate_limit_per_minute BIGINT,
    created_at            BIGINT  NOT NULL,
    updated_at            BIGINT  NOT NULL,
    PRIMARY KEY (tenant, id)
);

-- No foreign key to principals: a token outlives its owner's row, and Check treats a missing
-- owner as disabled.
CREATE TABLE tokens (
    id                    TEXT    PRIMARY KEY,
    tenant                TEXT    NOT NULL,
    owner_id              TEXT    NOT NULL,
    name                  TEXT    NOT NULL,
    description           TEXT    NOT NULL,
    permissions           TEXT    NOT NULL,
    roles                 TEXT    NOT NULL,
    allowed_ips           TEXT    NOT NULL,
    rate_limit_per_minute BIGINT  NOT NULL,
    require_signature     BOOLEAN NOT NULL,
    -- SHA-256 of the secret; the secret itself is never stored.
    secret_hash           BYTEA   NOT NULL UNIQUE,
    secret_hint           TEXT    NOT NULL,
    created_at            BIGINT  NOT NULL,
    updated_at            BIGINT  NOT NULL,
    expires_at            BIGINT  NOT NULL,
    rotated_at            BIGINT,
    revoked_at            BIGINT,
    last_used_at          BIGINT
);

-- Listing (tenant, optional owner, keyset on id) and counting an owner's live tokens.
CREATE INDEX tokens_tenant_owner_id ON tokens (tenant, owner_id, id);
CREATE INDEX tokens_tenant_id ON tokens (tenant, id);
-- Finding tokens about to expire.
CREATE INDEX tokens_expires_at ON tokens (expires_at);

-- Secrets rotated away: kept after their grace period so that Check can tell a rotated-out
-- secret from an unknown one.
CREATE TABLE retired_secrets (
    secret_hash BYTEA  PRIMARY KEY,
    token_id    TEXT   NOT NULL REFERENCES tokens (id) ON DELETE CASCADE,
    retired_at  BIGINT NOT NULL,
    grace_until BIGINT NOT NULL
);

CREATE INDEX retired_secrets_token_id ON retired_secrets (token_id);

CREATE TABLE roles (
    tenant      TEXT   NOT NULL,
    name        TEXT   NOT NULL,
    permissions TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant, name)
);

-- scope is a tenant, or '*' for all tenants at once.
CREATE TABLE api_status (
    scope      TEXT    PRIMARY KEY,
    online     BOOLEAN NOT NULL,
    message    TEXT    NOT NULL,
    updated_at BIGINT  NOT NULL
);

CREATE TABLE audit_events (
    id           BIGSERIAL PRIMARY KEY,
    time         BIGINT    NOT NULL,
    actor        TEXT      NOT NULL,
    action       TEXT      NOT NULL,
    tenant       TEXT      NOT NULL,
    token_id     TEXT,
    principal_id TEXT,
    summary      TEXT      NOT NULL
);

-- Paging one tenant's events by id.
CREATE INDEX audit_events_tenant_id ON audit_events (tenant, id);

CREATE TABLE admin_keys (
    -- SHA-256 of the admin key; the key itself is never stored.
    key_hash   BYTEA  PRIMARY KEY,
    label      TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
