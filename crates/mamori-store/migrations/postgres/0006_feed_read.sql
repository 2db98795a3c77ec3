-- A node's read of the change feed (crate::postgres::feed::read), as a function that plans its
-- query with sequential scans priced out. The feed is emptied between uses (pruned after a
-- minute, truncated by a server restart): statistics gathered while it was empty make the planner
-- scan the whole table, filtering every row, on each read every 10 ms, as the feed grows again
-- (measured: 22,216 rows filtered, 4-6 ms per read, two nodes' reads ~40 % of a core). A function
-- with its own setting keeps the index range from `last`'s xmin whatever the statistics say.
CREATE FUNCTION feed_since(last pg_snapshot)
RETURNS TABLE (now text, started text, tx text, node bigint, what smallint, body bytea)
LANGUAGE sql STABLE
SET enable_seqscan = off
AS $$
    WITH s AS (SELECT pg_current_snapshot() AS now, pg_postmaster_start_time()::text AS st)
    SELECT s.now::text, s.st, f.tx::text, f.node, f.what, f.body
    FROM s LEFT JOIN feed f
        ON f.tx >= pg_snapshot_xmin(last)
       AND pg_visible_in_snapshot(f.tx, s.now)
       AND NOT pg_visible_in_snapshot(f.tx, last)
    ORDER BY f.tx
$$;
