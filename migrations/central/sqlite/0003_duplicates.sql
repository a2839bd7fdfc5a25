-- Duplicate patients: the identifying fields and blocking keys of each
-- record (see shared/dedup), the likely pairs found, the pairs HQ said are
-- two people, and how far through the change sequence indexing has gone.

-- A record's identifying fields, normalised (JSON), and its keys.
CREATE TABLE duplicate_people (
    patient BLOB PRIMARY KEY,                 -- 16-byte UUID
    person  TEXT NOT NULL,                    -- JSON of the normalised fields
    keys    TEXT NOT NULL                     -- JSON list of its blocking keys
) WITHOUT ROWID;

-- Blocking keys: records sharing a key are compared.
CREATE TABLE duplicate_keys (
    key     TEXT NOT NULL,
    patient BLOB NOT NULL,
    PRIMARY KEY (key, patient)
) WITHOUT ROWID;

-- Likely pairs (a < b bytewise), with the comparison shown to people.
CREATE TABLE duplicate_pairs (
    a      BLOB NOT NULL,
    b      BLOB NOT NULL,
    score  REAL NOT NULL,
    fields TEXT NOT NULL,                     -- JSON list of {field, a, b, similarity}
    PRIMARY KEY (a, b)
) WITHOUT ROWID;
CREATE INDEX duplicate_pairs_b ON duplicate_pairs (b);
CREATE INDEX duplicate_pairs_score ON duplicate_pairs (score DESC);

-- Pairs dismissed as two people (a < b): never listed again.
CREATE TABLE duplicate_dismissed (
    a            BLOB NOT NULL,
    b            BLOB NOT NULL,
    dismissed_at INTEGER NOT NULL,
    PRIMARY KEY (a, b)
) WITHOUT ROWID;

-- The sequence number up to which records are indexed.
CREATE TABLE duplicate_cursor (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO duplicate_cursor (id, seq) VALUES (1, 0);
