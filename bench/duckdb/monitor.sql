-- The daily withdrawal report's literal columns in DuckDB SQL: an independent check of
-- `mamori monitor`. Parameters (filled by run.py): $files, $from_us, $to_us (UTC microseconds),
-- $link_days. Definitions (the monitoring issue): the linked destination change is the customer's
-- latest destination_change with t − link_days ≤ at < t (ties: the greatest event_id); the
-- baseline b is its time, or t; history is the customer's events but login_failed in
-- [b − 365 d, b); an empty value is NULL.

CREATE TEMP TABLE ev AS
SELECT
    event_id,
    epoch_us(CAST(occurred_at AS TIMESTAMPTZ)) AS us,
    customer_id,
    kind,
    nullif(ip, '') AS ip,
    amount
FROM read_json($files, format = 'newline_delimited', columns = {
    event_id: 'VARCHAR', occurred_at: 'VARCHAR', customer_id: 'VARCHAR',
    kind: 'VARCHAR', ip: 'VARCHAR', amount: 'BIGINT'
});

WITH w AS (
    SELECT * FROM ev WHERE kind = 'withdrawal' AND us >= $from_us AND us < $to_us
),
candidates AS (
    SELECT
        w.customer_id, w.event_id, d.event_id AS d_id, d.us AS d_us, d.ip AS d_ip,
        row_number() OVER (
            PARTITION BY w.customer_id, w.event_id ORDER BY d.us DESC, d.event_id DESC
        ) AS rn
    FROM w JOIN ev d
        ON d.customer_id = w.customer_id
        AND d.kind = 'destination_change'
        AND d.us >= w.us - $link_days * 86400000000
        AND d.us < w.us
),
linked AS (
    SELECT w.*, c.d_id, c.d_us, c.d_ip, coalesce(c.d_us, w.us) AS b
    FROM w LEFT JOIN (SELECT * FROM candidates WHERE rn = 1) c USING (customer_id, event_id)
),
cols AS (
    SELECT
        l.*,
        CASE WHEN l.ip IS NULL THEN NULL ELSE EXISTS (
            SELECT 1 FROM ev h
            WHERE h.customer_id = l.customer_id AND h.kind <> 'login_failed' AND h.ip = l.ip
              AND h.us < l.b AND h.us >= l.b - 365 * 86400000000
        ) END AS withdrawal_ip_seen_before,
        CASE WHEN l.d_ip IS NULL THEN NULL ELSE EXISTS (
            SELECT 1 FROM ev h
            WHERE h.customer_id = l.customer_id AND h.kind <> 'login_failed' AND h.ip = l.d_ip
              AND h.us < l.d_us AND h.us >= l.d_us - 365 * 86400000000
        ) END AS destination_change_ip_seen_before,
        (
            SELECT count(DISTINCT o.customer_id) FROM ev o
            WHERE o.ip = l.ip AND o.customer_id <> l.customer_id
              AND o.us >= l.us - 30 * 86400000000 AND o.us < l.us
        ) AS other_customers_30d
    FROM linked l
)
SELECT
    event_id,
    customer_id,
    tokyo(us) AS occurred_at,
    coalesce(ip, '') AS ip,
    amount,
    d_id AS destination_change_event_id,
    withdrawal_ip_seen_before,
    destination_change_ip_seen_before,
    CASE WHEN d_id IS NULL THEN NULL ELSE d_ip = ip END AS same_ip_as_destination_change,
    other_customers_30d
FROM cols
ORDER BY us, event_id, customer_id;
