-- Duplicate patients: the identifying fields and blocking keys of each
-- record, the likely pairs found, the pairs HQ said are two people, and how
-- far through the change sequence indexing has gone.

CREATE TABLE duplicate_people (
    patient BYTEA PRIMARY KEY,                -- 16-byte UUID
    person  TEXT NOT NULL,                    -- JSON of the normalised fields
    keys    TEXT NOT NULL                     -- JSON list of its blocking keys
);

CREATE TABLE duplicate_keys (
    key     TEXT NOT NULL,
    patient BYTEA NOT NULL,
    PRIMARY KEY (key, patient)
);

-- Likely pairs (a < b bytewise), with the comparison shown to people.
CREATE TABLE duplicate_pairs (
    a      BYTEA NOT NULL,
    b      BYTEA NOT NULL,
    score  DOUBLE PRECISION NOT NULL,
    fields TEXT NOT NULL,                     -- JSON list of {field, a, b, similarity}
    PRIMARY KEY (a, b)
);
CREATE INDEX duplicate_pairs_b ON duplicate_pairs (b);
CREATE INDEX duplicate_pairs_score ON duplicate_pairs (score DESC, a, b);

-- Pairs dismissed as two people (a < b): never listed again.
CREATE TABLE duplicate_dismissed (
    a            BYTEA NOT NULL,
    b            BYTEA NOT NULL,
    dismissed_at BIGINT NOT NULL,
    PRIMARY KEY (a, b)
);

-- The sequence number up to which records are indexed.
CREATE TABLE duplicate_cursor (
    id  BIGINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO duplicate_cursor (id, seq) VALUES (1, 0);
