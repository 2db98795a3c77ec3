-- Brute force and customer notices (migration 0010): consecutive password failures per customer
-- and kind (the back-off and lock are computed from them), and an outbox of notices to send to
-- customers (lockouts, destination changes, withdrawals).

CREATE TABLE auth_failures (
    customer_id TEXT NOT NULL,
    -- 'login' or 'withdrawal'
    kind TEXT NOT NULL,
    failures INTEGER NOT NULL,
    last_failure_at INTEGER NOT NULL,
    PRIMARY KEY (customer_id, kind)
) WITHOUT ROWID;

CREATE TABLE notices (
    notice_id INTEGER PRIMARY KEY,
    customer_id TEXT NOT NULL,
    -- 'lockout', 'destination_change', 'withdrawal', …
    kind TEXT NOT NULL,
    -- JSON: what the message says (no secrets).
    detail TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    sent_at INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX notices_unsent ON notices (notice_id) WHERE sent_at IS NULL;
