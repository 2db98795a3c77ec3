-- The (kind, occurred_at) index over every event cost two thirds of the import speed (random
-- inserts into one more large B-tree). Investigations are about sensitive procedures, so the index
-- keeps only those: destination_change, withdrawal, and credential/contact changes (codes of
-- mamori_core::event::Kind). Other kinds are found by a scan.
DROP INDEX events_kind;
CREATE INDEX events_sensitive ON events (kind, occurred_at) WHERE kind IN (4, 5, 7, 8, 9, 10, 11, 12);
