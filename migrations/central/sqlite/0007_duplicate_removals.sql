-- How many writes have taken members out of the duplicate index. A block
-- only grows while none leaves, so central remembers, for the count a
-- search reads in its snapshot, which blocks were too large to search
-- (in memory, see central/src/db/sqlite/duplicates.rs, `LargeLevels`)
-- and goes straight to their finer keys without reading them again.
CREATE TABLE duplicate_removals (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
);
INSERT INTO duplicate_removals (id, n) VALUES (1, 0);
