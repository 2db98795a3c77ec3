-- New ip_seen rows go to a small table first and are merged into ip_seen in key order every
-- few million rows (in the transaction that crosses the limit). Written straight into the large
-- table, each 400,000-event transaction at a million customers scattered ~90,000 rows over most
-- of its ~180,000 pages (docs/benchmarks.md). IP questions read both tables; a row of one may
-- have a twin in the other, and the counts of the two add up.
CREATE TABLE ip_seen_delta (
    ip BLOB NOT NULL,
    day INTEGER NOT NULL,
    customer_key INTEGER NOT NULL,
    logins INTEGER NOT NULL,
    failed_logins INTEGER NOT NULL,
    PRIMARY KEY (ip, day, customer_key)
) WITHOUT ROWID;
