-- Request signing. A token that requires signatures has a signing key, which Check must be able
-- to use, so it cannot be stored hashed: it is stored only encrypted under the server's master key
-- (TESSERA_MASTER_KEY) as one byte of format version, the 24-byte XChaCha20-Poly1305 nonce, then
-- ciphertext and tag, with the token id as associated data (a key copied to another token's row
-- does not open). NULL: the token has no signing key. migrations/sqlite/0003_signing_keys.sql is
-- the same change in SQLite's dialect.
ALTER TABLE tokens ADD COLUMN signing_key BYTEA;

-- The signing key that went with a rotated-away secret, so that during a rotation's grace period
-- clients still holding the old secret can still sign with the old key.
ALTER TABLE retired_secrets ADD COLUMN signing_key BYTEA;
