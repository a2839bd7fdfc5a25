-- Records' history in the database: every accepted change's git pack (the
-- objects from its old head to its new one; a creation's holds the whole
-- record), inserted in the same transaction that moves the head. Central
-- processes keep their git repositories in data_dir only as a cache,
-- brought up to date from these rows, so they share nothing but this
-- database.
CREATE TABLE record_history (
    patient BYTEA NOT NULL,
    seq     BIGINT NOT NULL,                  -- the change's sequence number
    head    TEXT NOT NULL,                    -- the head it brings
    pack    BYTEA NOT NULL,                   -- git pack data
    PRIMARY KEY (patient, seq)
);
CREATE INDEX record_history_head ON record_history (patient, head);
