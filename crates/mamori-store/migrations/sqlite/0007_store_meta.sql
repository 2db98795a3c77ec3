-- A counter every write transaction increments, in whichever process: a process that caches
-- what it read (the server's hot cache) tells from it whether another process wrote since.
CREATE TABLE store_meta (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    seq INTEGER NOT NULL
);
INSERT INTO store_meta (id, seq) VALUES (0, 0);
