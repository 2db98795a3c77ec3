-- The real-time decisions (migration 0006): every assessment with its decision and what happened
-- next, the alerts staff work through, what their resolutions taught (IPs and devices made
-- familiar for a customer; IPs confirmed in fraud), and the API keys of client systems.

CREATE TABLE assessments (
    assessment_id TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    customer_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    channel INTEGER NOT NULL,
    ip BLOB,
    device_hash INTEGER,
    decision TEXT NOT NULL,
    score INTEGER NOT NULL,
    -- The reasons as JSON (codes, points, evidence; no personal data).
    reasons TEXT NOT NULL,
    -- The attempted event as JSON (the event contract), stored in `events` once it happens.
    event TEXT NOT NULL,
    outcome TEXT,
    outcome_at INTEGER
);
CREATE INDEX assessments_customer ON assessments (customer_id, created_at);

CREATE TABLE alerts (
    alert_id INTEGER PRIMARY KEY,
    assessment_id TEXT NOT NULL UNIQUE REFERENCES assessments (assessment_id),
    opened_at INTEGER NOT NULL,
    -- hold, block or challenge_failed
    trigger TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open',
    resolution TEXT,
    note TEXT,
    resolved_by TEXT,
    resolved_at INTEGER
);
CREATE INDEX alerts_status ON alerts (status, alert_id);

-- A legitimate resolution: the customer's IP and device of that assessment are familiar.
CREATE TABLE familiar (
    customer_id TEXT NOT NULL,
    ip BLOB,
    device_hash INTEGER,
    at INTEGER NOT NULL,
    alert_id INTEGER NOT NULL
);
CREATE INDEX familiar_customer ON familiar (customer_id, at);

-- A confirmed fraud: its IP raises the risk of whoever it touches.
CREATE TABLE fraud_ips (
    ip BLOB NOT NULL,
    at INTEGER NOT NULL,
    alert_id INTEGER NOT NULL,
    PRIMARY KEY (ip, alert_id)
) WITHOUT ROWID;

CREATE TABLE api_keys (
    key_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    -- Comma-separated: ingest, assess, read, admin.
    scopes TEXT NOT NULL,
    -- SHA-256 of the whole key; the key itself is shown once, at creation.
    hash BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER,
    last_used_at INTEGER
);
