-- Central's database (SQLite backend). The git repositories hold the
-- records; this database holds what central decides about them: the
-- acknowledged head of every record (the source of truth, see
-- central/src/apply.rs), the global change sequence, instances and
-- their scopes, holders, and patient locks.

-- Registered satellites.
CREATE TABLE instances (
    id          INTEGER PRIMARY KEY,          -- 0..=65535
    name        TEXT NOT NULL,
    token_hash  BLOB NOT NULL UNIQUE,         -- SHA-256 of the token; the token itself is never stored
    scope_epoch INTEGER NOT NULL DEFAULT 1,   -- bumped when its catchments change
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

-- The catchments (areas) an instance serves.
CREATE TABLE instance_catchments (
    instance  INTEGER NOT NULL REFERENCES instances (id),
    catchment TEXT NOT NULL,
    position  INTEGER NOT NULL,               -- the first is the default for records it creates
    PRIMARY KEY (instance, catchment)
) WITHOUT ROWID;

-- One row per record: its acknowledged head and latest sequence number.
CREATE TABLE records (
    patient    BLOB PRIMARY KEY,              -- 16-byte UUID
    head       TEXT NOT NULL,                 -- 40 hex digits
    seq        INTEGER NOT NULL,              -- number of its latest change
    catchment  TEXT,                          -- from patient.yaml, else the creator's first catchment
    created_by INTEGER,                       -- instance id; NULL: created by HQ
    updated_by INTEGER,                       -- who made the latest change (NULL: HQ)
    holders    BLOB NOT NULL DEFAULT x'',     -- bit string: bit i set = instance i holds it (trailing zeros trimmed)
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE UNIQUE INDEX records_seq ON records (seq);
CREATE INDEX records_catchment_seq ON records (catchment, seq);

-- Every accepted change, in sequence order (the audit of heads, and the
-- base a pull's pack starts from).
CREATE TABLE changes (
    seq      INTEGER PRIMARY KEY,
    patient  BLOB NOT NULL,
    head     TEXT NOT NULL,
    instance INTEGER,                         -- NULL: HQ
    time     INTEGER NOT NULL
);
CREATE INDEX changes_patient_seq ON changes (patient, seq);

-- Records in an instance's scope beyond its catchments: ones it created,
-- ones it fetched by id (visiting patients), ones it held when their
-- catchment moved.
CREATE TABLE grants (
    instance   INTEGER NOT NULL,
    patient    BLOB NOT NULL,
    reason     TEXT NOT NULL,                 -- created | fetched | held
    granted_at INTEGER NOT NULL,
    PRIMARY KEY (instance, patient)
) WITHOUT ROWID;
CREATE INDEX grants_patient ON grants (patient);

-- Patient locks: a lease per patient, so a crashed process blocks a
-- patient no longer than its lease.
CREATE TABLE locks (
    patient    BLOB PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL               -- Unix milliseconds
) WITHOUT ROWID;

-- Heads committed here whose git ref may not have moved yet (a crash
-- between the two); repaired at start-up.
CREATE TABLE ref_pending (
    patient BLOB PRIMARY KEY,
    head    TEXT NOT NULL,
    staging TEXT                              -- for a new record: the folder to rename into place
) WITHOUT ROWID;

-- Counters: 'seq' is the last sequence number given out.
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO counters (name, value) VALUES ('seq', 0);
