-- The duplicate index, laid out so that a block's members are read with
-- their fields in one range: each record is stored once per blocking rule,
-- under that rule's finest key, with the fields that comparing needs (see
-- shared/dedup, `Person::to_row`). A coarser level is a prefix of its
-- finer ones (then a space), so a block at any level is one range of
-- `duplicate_members` (keys compared bytewise: COLLATE "C"), and its size
-- is counted there (at most one more than the largest block searched),
-- not kept in a table of its own. The primary key's index carries the
-- fields, so a block is read from the index alone.
--
-- The index is derived from the records: it is emptied here and rebuilt
-- by the indexer from the start of the change sequence. Pairs already
-- found stay listed meanwhile (each is replaced when one of its records is
-- indexed again); dismissals are kept.
DROP TABLE duplicate_blocks;
DROP TABLE duplicate_keys;
DROP TABLE duplicate_people;

-- The keys each record is stored under (JSON list), to find its rows
-- again when it changes.
CREATE TABLE duplicate_people (
    patient BYTEA PRIMARY KEY,                -- 16-byte UUID
    keys    TEXT NOT NULL
);

-- One row per record and blocking rule.
CREATE TABLE duplicate_members (
    key     TEXT COLLATE "C" NOT NULL,        -- the rule's finest key
    patient BYTEA NOT NULL,
    fields  TEXT NOT NULL,                    -- the fields compared (Person::to_row)
    PRIMARY KEY (key, patient) INCLUDE (fields)
);

UPDATE duplicate_cursor SET seq = 0 WHERE id = 1;
