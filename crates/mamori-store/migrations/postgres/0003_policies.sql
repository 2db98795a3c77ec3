-- The engine's policy set at run time: every revision kept; nodes poll the latest number.
CREATE TABLE policies (
    revision bigint PRIMARY KEY,
    body text NOT NULL,
    set_at bigint NOT NULL,
    set_by text NOT NULL,
    reason text NOT NULL
);
