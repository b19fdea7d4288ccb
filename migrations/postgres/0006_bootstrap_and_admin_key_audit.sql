-- One bootstrap admin key per database, whichever replica gets there first. The replica that
-- creates the key inserts this table's only row in the same transaction as the key; a replica
-- starting at the same moment waits on that row's unique index, then finds it taken and creates
-- nothing. migrations/sqlite/0006_bootstrap_and_admin_key_audit.sql is the same change in
-- SQLite's dialect.
CREATE TABLE bootstrap (
    singleton  SMALLINT PRIMARY KEY CHECK (singleton = 1),
    created_at BIGINT   NOT NULL
);

-- The admin key that made each call (`admin-key:` and the first 8 hex digits of its SHA-256),
-- beside `actor`, which is what the caller claimed in `x-tessera-actor` (else the same
-- fingerprint). Empty for events written before this column, and for the server's own events.
ALTER TABLE audit_events ADD COLUMN admin_key TEXT NOT NULL DEFAULT '';
