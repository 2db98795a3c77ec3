-- The investigation's literal columns in DuckDB SQL: the peer that `mamori investigate --events`
-- is measured against, and an independent check of its literal columns.
-- Parameters (filled by run.py): $files, $kind, $channels, $from_us, $to_us (UTC microseconds).
-- Assumes unique (customer_id, event_id) (as the simulator writes).

CREATE MACRO v6_prefix(ip) AS (
    -- /48 of an IPv6 text: expand '::', keep three groups, zero-pad, lower case.
    WITH parts AS (SELECT string_split(lower(ip), '::') AS p),
    g AS (
        SELECT
            CASE WHEN p[1] = '' THEN []::VARCHAR[] ELSE string_split(p[1], ':') END AS l,
            CASE WHEN len(p) < 2 OR p[2] = '' THEN []::VARCHAR[] ELSE string_split(p[2], ':') END AS r
        FROM parts
    ),
    f AS (SELECT list_concat(l, list_transform(range(8 - len(l) - len(r)), lambda x: '0'), r) AS g8 FROM g)
    SELECT array_to_string(list_transform(g8[1:3], lambda x: lpad(x, 4, '0')), ':') FROM f
);

CREATE TEMP TABLE ev AS
SELECT
    event_id,
    epoch_us(CAST(occurred_at AS TIMESTAMPTZ)) AS us,
    customer_id,
    kind,
    coalesce(nullif(channel, ''), 'web') AS channel,
    nullif(ip, '') AS ip,
    CASE
        WHEN nullif(ip, '') IS NULL THEN NULL
        WHEN contains(ip, ':') THEN v6_prefix(ip)
        ELSE regexp_replace(ip, '\.[0-9]+$', '')
    END AS pfx
FROM read_json($files, format = 'newline_delimited', columns = {
    event_id: 'VARCHAR', occurred_at: 'VARCHAR', customer_id: 'VARCHAR',
    kind: 'VARCHAR', channel: 'VARCHAR', ip: 'VARCHAR'
});

WITH procs AS (
    SELECT * FROM ev
    WHERE kind = $kind AND list_contains($channels, channel) AND us >= $from_us AND us < $to_us
),
hist AS (
    SELECT
        p.event_id,
        count(h.us) AS history_events,
        coalesce(bool_or(h.ip = p.ip), false) AS ip_seen_before,
        coalesce(bool_or(h.pfx = p.pfx), false) AS prefix_seen_before,
        min(h.us) FILTER (WHERE h.ip = p.ip) AS ip_first_seen_at,
        count(DISTINCT (h.us + 32400000000) // 86400000000) FILTER (WHERE h.ip = p.ip) AS ip_days_seen
    FROM procs p
    LEFT JOIN ev h
        ON h.customer_id = p.customer_id
        AND h.kind <> 'login_failed'
        AND h.us >= p.us - 365 * 86400000000
        AND h.us < p.us
    GROUP BY p.event_id
),
others AS (
    SELECT p.event_id, count(DISTINCT o.customer_id) AS other_customers_30d
    FROM procs p
    LEFT JOIN ev o
        ON o.ip = p.ip
        AND o.customer_id <> p.customer_id
        AND o.us >= p.us - 30 * 86400000000
        AND o.us < p.us
    GROUP BY p.event_id
)
SELECT
    p.event_id,
    p.customer_id,
    tokyo(p.us) AS occurred_at,
    p.channel,
    coalesce(p.ip, '') AS ip,
    h.ip_seen_before,
    h.prefix_seen_before,
    coalesce(tokyo(h.ip_first_seen_at), '') AS ip_first_seen_at,
    h.ip_days_seen,
    h.history_events,
    o.other_customers_30d
FROM procs p
JOIN hist h USING (event_id)
JOIN others o USING (event_id)
ORDER BY p.us, p.event_id, p.customer_id;
