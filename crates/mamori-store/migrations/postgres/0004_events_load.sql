-- Months an import brings that the store does not have yet are loaded beside `events`, as
-- partitions of this table (loading_YYYY_MM), without indexes; when the import ends, each is
-- indexed in bulk and attached to `events` as its month's partition (PgStore::finish_loading).
-- Building an index once is far cheaper than adding millions of random entries to it. Until
-- then the month's events are not read; their keys are in event_keys, so a copy sent again is
-- still a duplicate.
CREATE TABLE events_load (LIKE events) PARTITION BY RANGE (occurred_at);
