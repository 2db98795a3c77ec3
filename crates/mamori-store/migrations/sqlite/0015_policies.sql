-- The engine's policy set at run time: every revision kept; nodes poll the latest number.
CREATE TABLE policies (
    revision INTEGER PRIMARY KEY,
    body TEXT NOT NULL,
    set_at INTEGER NOT NULL,
    set_by TEXT NOT NULL,
    reason TEXT NOT NULL
);
