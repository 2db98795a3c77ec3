-- Access events. Times are UTC microseconds since the Unix epoch. IPs are 16-byte big-endian keys
-- (IPv4 mapped into IPv6), so a CIDR block is a key range. kind/channel/side use the codes of
-- mamori_core::event. device_hash is mamori_core::history::device_hash(device_id).
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,
    customer_id TEXT NOT NULL,
    kind INTEGER NOT NULL,
    channel INTEGER NOT NULL,
    ip BLOB,
    device_hash INTEGER,
    device_id TEXT,
    user_agent TEXT,
    amount INTEGER,
    side INTEGER,
    dest_bank_code TEXT,
    dest_branch_code TEXT,
    dest_account_type TEXT,
    dest_account_number TEXT,
    dest_holder_kana TEXT
);

-- Idempotency key.
CREATE UNIQUE INDEX events_event_id ON events (event_id);
-- A customer's history, covering what history questions read.
CREATE INDEX events_customer ON events (customer_id, occurred_at, kind, channel, ip, device_hash);
-- Who used an IP (or a CIDR block) when.
CREATE INDEX events_ip ON events (ip, occurred_at, customer_id, kind) WHERE ip IS NOT NULL;
-- Procedures of a kind in a period; retention.
CREATE INDEX events_kind ON events (kind, occurred_at);
