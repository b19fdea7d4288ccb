-- Admin keys become managed credentials: id, name, tenants (a JSON text array; `[]` is every
-- tenant), role, secret hint, creator, optional expiry, last use and revocation; only the SHA-256
-- of the secret is stored. migrations/postgres/0007_managed_admin_keys.sql is the same change in
-- Postgres' dialect, with the reasons; keep them in step.
CREATE TABLE managed_admin_keys (
    id           TEXT    PRIMARY KEY,
    key_hash     BLOB    NOT NULL UNIQUE,
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
SELECT 'adk_0' || substr(hex(key_hash), 1, 25), key_hash, label, '[]', 'owner',
       'tsa_…', created_at, label, label = 'bootstrap'
FROM admin_keys;

DROP TABLE admin_keys;
ALTER TABLE managed_admin_keys RENAME TO admin_keys;
