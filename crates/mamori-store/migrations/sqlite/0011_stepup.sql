-- Step-up tokens (migration 0011): proof of a fresh second factor for one operation with given
-- parameters, stored as the token's SHA-256, consumed once.
CREATE TABLE stepup_tokens (
    token_digest TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    operation TEXT NOT NULL,
    params_digest TEXT NOT NULL,
    -- How the customer proved it: totp, recovery_code, passkey (+ withdrawal_password).
    method TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
) WITHOUT ROWID;
