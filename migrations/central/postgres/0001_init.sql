-- Central's database (PostgreSQL backend): the same tables as the SQLite
-- backend (migrations/central/sqlite/), for any number of central
-- processes sharing one database. The database holds what central decides
-- about records: the acknowledged head of every record (the source of
-- truth, see central/src/apply.rs), the global change sequence, instances
-- and their scopes, holders, and patient leases.

-- Registered satellites.
CREATE TABLE instances (
    id          BIGINT PRIMARY KEY CHECK (id BETWEEN 0 AND 65535),
    name        TEXT NOT NULL,
    token_hash  BYTEA NOT NULL UNIQUE,        -- SHA-256 of the token; the token itself is never stored
    scope_epoch BIGINT NOT NULL DEFAULT 1,    -- bumped when its catchments change
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

-- The catchments (areas) an instance serves.
CREATE TABLE instance_catchments (
    instance  BIGINT NOT NULL REFERENCES instances (id),
    catchment TEXT NOT NULL,
    position  BIGINT NOT NULL,                -- the first is the default for records it creates
    PRIMARY KEY (instance, catchment)
);

-- One row per record: its acknowledged head and latest sequence number.
CREATE TABLE records (
    patient    BYTEA PRIMARY KEY,             -- 16-byte UUID
    head       TEXT NOT NULL,                 -- 40 hex digits
    seq        BIGINT NOT NULL,               -- number of its latest change
    catchment  TEXT,                          -- from patient.yaml, else the creator's first catchment
    created_by BIGINT,                        -- instance id; NULL: created by HQ
    updated_by BIGINT,                        -- who made the latest change (NULL: HQ)
    holders    BYTEA NOT NULL DEFAULT '\x',   -- bit string: bit i set = instance i holds it (trailing zeros trimmed)
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX records_seq ON records (seq);
CREATE INDEX records_catchment_seq ON records (catchment, seq);

-- Every accepted change, in sequence order (the audit of heads, and the
-- base a pull's pack starts from).
CREATE TABLE changes (
    seq      BIGINT PRIMARY KEY,
    patient  BYTEA NOT NULL,
    head     TEXT NOT NULL,
    instance BIGINT,                          -- NULL: HQ
    time     BIGINT NOT NULL
);
CREATE INDEX changes_patient_seq ON changes (patient, seq);

-- Records in an instance's scope beyond its catchments: ones it created,
-- ones it fetched by id (visiting patients), ones it held when their
-- catchment moved.
CREATE TABLE grants (
    instance   BIGINT NOT NULL,
    patient    BYTEA NOT NULL,
    reason     TEXT NOT NULL,                 -- created | fetched | held
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (instance, patient)
);
CREATE INDEX grants_patient ON grants (patient);

-- Patient leases, so a crashed process blocks a patient no longer than
-- its lease. Expiry is on the database's clock, so central processes on
-- servers whose clocks disagree still agree on who holds a lease. `fence`
-- grows every time a lease changes hands.
CREATE SEQUENCE lock_fence;
CREATE TABLE locks (
    patient    BYTEA PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL,               -- Unix milliseconds (database clock)
    fence      BIGINT NOT NULL
);

-- Heads committed here whose git ref may not have moved yet (a crash
-- between the two); repaired at start-up.
CREATE TABLE ref_pending (
    patient BYTEA PRIMARY KEY,
    head    TEXT NOT NULL,
    staging TEXT                              -- for a new record: the folder to rename into place
);

-- Counters: 'seq' is the last sequence number given out. Every write
-- transaction that accepts heads updates this row, so writers queue on its
-- row lock and commit in sequence order: a reader never sees seq n+1
-- before seq n.
CREATE TABLE counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('seq', 0);
