-- Customer-side defences (migration 0008): customers' records and registered destinations, the
-- tamper-evident audit log, and the emergency switches.

-- Personal data: shown masked by default; unmasked only to staff with a reason, each reveal
-- audited. Never logged.
CREATE TABLE customer_records (
    customer_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    name_kana TEXT NOT NULL,
    birth_date TEXT,
    postal_code TEXT,
    address TEXT,
    phone TEXT,
    email TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Registered withdrawal destinations.
CREATE TABLE customer_destinations (
    customer_id TEXT NOT NULL,
    bank_code TEXT NOT NULL,
    branch_code TEXT NOT NULL,
    account_type TEXT NOT NULL,
    account_number TEXT NOT NULL,
    holder_kana TEXT NOT NULL,
    registered_at INTEGER NOT NULL,
    PRIMARY KEY (customer_id, bank_code, branch_code, account_type, account_number)
) WITHOUT ROWID;

-- Append-only: each entry carries the SHA-256 of its content and of the previous entry
-- (mamori_auth::audit); audit_head holds the last entry's seq and hash, written in the same
-- transaction, so that entries cut from the end show.
CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    seq INTEGER NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

-- Procedures switched off per channel (a missing row: on).
CREATE TABLE switches (
    kind INTEGER NOT NULL,
    channel INTEGER NOT NULL,
    enabled INTEGER NOT NULL,
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    changed_at INTEGER NOT NULL,
    PRIMARY KEY (kind, channel)
) WITHOUT ROWID;
