-- Passkeys (migration 0013): customers' WebAuthn credentials as a second factor, and the
-- ceremonies between their two halves (options → finish), kept here so that any node can finish
-- a ceremony another node started, and taken once.

CREATE TABLE passkeys (
    customer_id TEXT NOT NULL,
    -- base64url, unpadded.
    credential_id TEXT NOT NULL,
    -- What the customer calls it ("iPhone").
    name TEXT NOT NULL,
    -- webauthn-rs's Passkey in JSON: the public key, counter and flags (nothing secret).
    passkey TEXT NOT NULL,
    -- The authenticator's signature counter as last accepted (0: it keeps none); it must rise.
    counter INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER,
    PRIMARY KEY (customer_id, credential_id)
) WITHOUT ROWID;
-- A credential belongs to one customer only.
CREATE UNIQUE INDEX passkeys_credential ON passkeys (credential_id);

CREATE TABLE passkey_ceremonies (
    ceremony_id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    purpose TEXT NOT NULL CHECK (purpose IN ('register', 'authenticate')),
    -- webauthn-rs's ceremony state in JSON (the challenge; for authentication the passkeys).
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX passkey_ceremonies_expiry ON passkey_ceremonies (expires_at);
