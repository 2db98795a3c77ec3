-- Destinations registered through mamori's flow (migration 0012): a status (effective, or
-- pending_review while staff look at a held change), when withdrawals to it may start (the
-- cooling-off period), and the assessment that decided it. Imported destinations are effective.
ALTER TABLE customer_destinations ADD COLUMN status TEXT NOT NULL DEFAULT 'effective';
ALTER TABLE customer_destinations ADD COLUMN effective_at INTEGER;
ALTER TABLE customer_destinations ADD COLUMN assessment_id TEXT;
