-- The size of each duplicate-detection block (records holding a blocking
-- key), kept with the keys, so that an oversized block is known for one
-- look-up and never read.
CREATE TABLE duplicate_blocks (
    key  TEXT PRIMARY KEY,
    size BIGINT NOT NULL
);
INSERT INTO duplicate_blocks (key, size)
    SELECT key, count(*) FROM duplicate_keys GROUP BY key;
