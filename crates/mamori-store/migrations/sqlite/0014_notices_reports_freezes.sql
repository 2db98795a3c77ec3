-- Sending notices, "this wasn't me" and frozen withdrawals (migration 0014).

-- The outbox retries a failed notice later, and gives up after a number of attempts.
ALTER TABLE notices ADD COLUMN next_attempt_at INTEGER;
-- The assessment the notice tells of (a destination change, a withdrawal), if any: a report
-- from its link labels that assessment as fraud.
ALTER TABLE notices ADD COLUMN assessment_id TEXT;
CREATE INDEX notices_customer ON notices (customer_id, notice_id);

-- "This wasn't me" links in notices: the token's SHA-256, single use, expiring.
CREATE TABLE report_links (
    token_digest TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    notice_id INTEGER NOT NULL,
    notice_kind TEXT NOT NULL,
    assessment_id TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
) WITHOUT ROWID;

-- Customers whose withdrawals are frozen (a report, or staff), until staff lift it.
CREATE TABLE withdrawal_freezes (
    customer_id TEXT PRIMARY KEY,
    frozen_at INTEGER NOT NULL,
    -- 'customer_report' or 'staff'
    source TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL
) WITHOUT ROWID;
