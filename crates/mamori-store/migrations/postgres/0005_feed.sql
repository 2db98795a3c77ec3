-- The change feed (crate::postgres::feed): every transaction that stores events writes them
-- here too, in one row, so that each serving node's cache learns of other processes' writes in
-- the order they commit: a node reads the rows its last snapshot did not see and its new one
-- does. `what` 1: the body is the events; 2: too many to send (a bulk load, a purge), every
-- node empties its cache. Rows are pruned after a minute.
--
-- Unlogged: the feed is only news for caches. A server restart empties it, and nodes notice the
-- restart (pg_postmaster_start_time) and empty their caches.
CREATE UNLOGGED TABLE feed (
    tx xid8 NOT NULL DEFAULT pg_current_xact_id(),
    node bigint NOT NULL,
    what smallint NOT NULL,
    body bytea NOT NULL
);
CREATE INDEX feed_tx ON feed (tx);
