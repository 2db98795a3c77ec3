-- The compact schema (measurements in docs/benchmarks.md, "Import"):
-- * customer, device and user-agent texts are stored once, in side tables, and events refer to
--   them by integer keys;
-- * events is clustered by customer and time (WITHOUT ROWID), so a customer's history is one range
--   of the table and is written in place, with no separate covering index;
-- * the per-event IP index is replaced by ip_seen: one row per (IP, UTC day, customer). "Who used
--   this IP between a and b" reads the candidate customers of the days that cover [a, b) there and
--   then those customers' exact events. ip_seen may hold more than the events do (never less).
-- Existing data is copied. The idempotency key becomes (customer, event_id).

CREATE TABLE customers (
    customer_key INTEGER PRIMARY KEY,
    customer_id TEXT NOT NULL UNIQUE
);
CREATE TABLE devices (
    device_key INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL UNIQUE
);
CREATE TABLE user_agents (
    ua_key INTEGER PRIMARY KEY,
    user_agent TEXT NOT NULL UNIQUE
);

INSERT INTO customers (customer_id) SELECT DISTINCT customer_id FROM events ORDER BY customer_id;
INSERT INTO devices (device_id)
    SELECT DISTINCT device_id FROM events WHERE device_id IS NOT NULL ORDER BY device_id;
INSERT INTO user_agents (user_agent)
    SELECT DISTINCT user_agent FROM events WHERE user_agent IS NOT NULL ORDER BY user_agent;

ALTER TABLE events RENAME TO events_v1;
DROP INDEX events_event_id;
DROP INDEX events_customer;
DROP INDEX events_ip;
DROP INDEX events_sensitive;

-- Times are UTC microseconds; ip is the 16-byte key of mamori_core::net (IPv4 mapped into IPv6);
-- kind/channel/side are the codes of mamori_core::event; device_hash is
-- mamori_core::history::device_hash(device_id).
CREATE TABLE events (
    customer_key INTEGER NOT NULL,
    occurred_at INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    kind INTEGER NOT NULL,
    channel INTEGER NOT NULL,
    ip BLOB,
    device_hash INTEGER,
    device_key INTEGER,
    ua_key INTEGER,
    amount INTEGER,
    side INTEGER,
    dest_bank_code TEXT,
    dest_branch_code TEXT,
    dest_account_type TEXT,
    dest_account_number TEXT,
    dest_holder_kana TEXT,
    PRIMARY KEY (customer_key, occurred_at, event_id)
) WITHOUT ROWID;

INSERT INTO events
    SELECT c.customer_key, e.occurred_at, e.event_id, e.kind, e.channel, e.ip, e.device_hash,
           d.device_key, u.ua_key, e.amount, e.side, e.dest_bank_code, e.dest_branch_code,
           e.dest_account_type, e.dest_account_number, e.dest_holder_kana
    FROM events_v1 e
    JOIN customers c ON c.customer_id = e.customer_id
    LEFT JOIN devices d ON d.device_id = e.device_id
    LEFT JOIN user_agents u ON u.user_agent = e.user_agent
    ORDER BY c.customer_key, e.occurred_at, e.event_id;
DROP TABLE events_v1;

-- Idempotency key: a customer's event_id is stored once, whatever else differs. Per customer
-- rather than global: the same id sent for two customers is two events (neither is lost), and
-- the index is written in customer order like the table, where a global index on random ids
-- (UUIDs) took import from 445k to 99k events/s (docs/benchmarks.md).
CREATE UNIQUE INDEX events_customer_event_id ON events (customer_key, event_id);
-- Sensitive procedures of a kind in a period (the kinds of migration 0002), covering what an
-- investigation reads of them (the entries also hold the key: customer_key, event_id).
CREATE INDEX events_sensitive ON events (kind, occurred_at, channel, ip, device_hash)
    WHERE kind IN (4, 5, 7, 8, 9, 10, 11, 12);

-- day = floor(occurred_at / 86,400,000,000): the UTC day number.
CREATE TABLE ip_seen (
    ip BLOB NOT NULL,
    day INTEGER NOT NULL,
    customer_key INTEGER NOT NULL,
    PRIMARY KEY (ip, day, customer_key)
) WITHOUT ROWID;

INSERT INTO ip_seen
    SELECT DISTINCT ip,
           (occurred_at - (((occurred_at % 86400000000) + 86400000000) % 86400000000)) / 86400000000,
           customer_key
    FROM events WHERE ip IS NOT NULL
    ORDER BY 1, 2, 3;
