-- Admin keys become managed credentials (CreateAdminKey, ListAdminKeys, GetAdminKey,
-- RevokeAdminKey): each has an id, a name, the tenants it may act in (a JSON text array of tenant
-- names; `[]` is every tenant), a role (`viewer`, `token_manager`, `owner`), the hint of its
-- secret, who created it, an optional expiry, its last use and its revocation. Only the SHA-256 of
-- the secret is stored, as before. migrations/sqlite/0007_managed_admin_keys.sql is the same
-- change in SQLite's dialect; keep them in step.
--
-- The keys stored so far (the bootstrap's) stay all-tenant owners, with an id derived from their
-- hash (`adk_0` and 25 hex digits: a valid ULID) and `bootstrap` set, so they keep working until
-- `TESSERA_ADMIN_KEYS` is set or they are revoked.
CREATE TABLE managed_admin_keys (
    id           TEXT    PRIMARY KEY,
    key_hash     BYTEA   NOT NULL UNIQUE,
    name         TEXT    NOT NULL,
    tenants      TEXT    NOT NULL,
    role         TEXT    NOT NULL,
    secret_hint  TEXT    NOT NULL,
    created_at   BIGINT  NOT NULL,
    created_by   TEXT    NOT NULL,
    expires_at   BIGINT,
    last_used_at BIGINT,
    revoked_at   BIGINT,
    bootstrap    BOOLEAN NOT NULL
);

INSERT INTO managed_admin_keys
    (id, key_hash, name, tenants, role, secret_hint, created_at, created_by, bootstrap)
SELECT 'adk_0' || substr(upper(encode(key_hash, 'hex')), 1, 25), key_hash, label, '[]', 'owner',
       'tsa_…', created_at, label, label = 'bootstrap'
FROM admin_keys;

DROP TABLE admin_keys;
ALTER TABLE managed_admin_keys RENAME TO admin_keys;
