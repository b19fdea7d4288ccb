-- Console and portal sessions, and per-tenant portal branding (issue 18).
-- migrations/sqlite/0012_console_sessions.sql is the same change in SQLite's dialect; keep
-- them in step.

-- A signed-in browser: an operator of the console (/console/, signed in with an admin key) or
-- a platform's end user in the portal (/portal/, through CreatePortalSession's one-time URL).
-- Only hashes are stored: the SHA-256 of the cookie's secret, of the portal's one-time code,
-- and of the admin key the operator signed in with (checked again on every request, so a
-- revoked key ends its sessions).
CREATE TABLE console_sessions (
    -- `cs_` and a ULID: named in logs and audit entries, never a credential.
    id             TEXT    PRIMARY KEY,
    -- 'console' or 'portal'.
    kind           TEXT    NOT NULL,
    -- SHA-256 of the session cookie's secret; NULL while a portal session's code is unused.
    secret_hash    BYTEA   UNIQUE,
    -- SHA-256 of a portal session's one-time code; NULL once it has been exchanged.
    code_hash      BYTEA   UNIQUE,
    -- The operator's admin key (console) — its hash, as admin_keys.key_hash holds it.
    admin_key_hash BYTEA,
    -- Who acts, as audit entries name them (`console:…`, `portal:…`).
    actor          TEXT    NOT NULL,
    -- A portal session's tenant and principal; empty for the console.
    tenant         TEXT    NOT NULL,
    principal_id   TEXT    NOT NULL,
    -- Where the portal's "back" link goes (CreatePortalSession's return_url).
    return_url     TEXT    NOT NULL,
    created_at     BIGINT  NOT NULL,
    -- Refreshed as the session is used (at most once a minute); the idle expiry counts from it.
    last_seen_at   BIGINT  NOT NULL,
    -- The absolute expiry: no use extends it.
    expires_at     BIGINT  NOT NULL,
    revoked_at     BIGINT
);
CREATE INDEX console_sessions_expires_at ON console_sessions (expires_at);

-- How a tenant's portal looks: its product name, logo and accent colour.
CREATE TABLE portal_branding (
    tenant       TEXT   PRIMARY KEY,
    product_name TEXT   NOT NULL,
    logo_url     TEXT   NOT NULL,
    -- `#rrggbb`, or empty for Tessera's own.
    accent_color TEXT   NOT NULL,
    updated_at   BIGINT NOT NULL
);
