-- Customers' credentials (migration 0009): login and withdrawal passwords as Argon2id PHC
-- strings, TOTP secrets with the last step accepted (a code never works twice), recovery codes
-- as SHA-256 digests.

CREATE TABLE passwords (
    customer_id TEXT NOT NULL,
    -- 'login' or 'withdrawal'
    kind TEXT NOT NULL,
    hash TEXT NOT NULL,
    changed_at INTEGER NOT NULL,
    PRIMARY KEY (customer_id, kind)
) WITHOUT ROWID;

CREATE TABLE totp (
    customer_id TEXT PRIMARY KEY,
    secret BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    -- NULL until the customer confirms the enrolment with a first code.
    confirmed_at INTEGER,
    last_step INTEGER
) WITHOUT ROWID;

CREATE TABLE recovery_codes (
    customer_id TEXT NOT NULL,
    digest TEXT NOT NULL,
    used_at INTEGER,
    PRIMARY KEY (customer_id, digest)
) WITHOUT ROWID;
