-- A satellite's sync state. The records themselves are git repositories
-- beside this file; this database says what central has seen of them.

-- One row per record held here.
CREATE TABLE records (
    patient      BLOB PRIMARY KEY,      -- 16-byte UUID
    central_head TEXT,                  -- last head central acknowledged; NULL: central has never seen it
    central_seq  INTEGER,               -- its number in central's change sequence
    synced_at    INTEGER,               -- Unix seconds of the last successful sync
    dirty        INTEGER NOT NULL DEFAULT 1, -- set BEFORE every local head move; cleared by push
    changes      INTEGER NOT NULL DEFAULT 0, -- bumped before AND after every local head move (see db/sync.rs)
    refused      TEXT,                  -- why central last refused a push of it, if it did
    refused_head TEXT                   -- the local head it refused (not pushed again until the head moves)
) WITHOUT ROWID;
CREATE INDEX records_dirty ON records (patient) WHERE dirty = 1;

-- Cursors and other single values.
CREATE TABLE state (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

-- True conflicts found while merging central's changes: central's value is
-- in the record, this clinic's value waits here for a clinician.
CREATE TABLE conflicts (
    id                INTEGER PRIMARY KEY,
    patient           BLOB NOT NULL,
    file              TEXT NOT NULL,
    path              TEXT NOT NULL,
    base              TEXT NOT NULL,    -- JSON
    ours              TEXT NOT NULL,    -- JSON
    theirs            TEXT NOT NULL,    -- JSON
    ours_commit       TEXT NOT NULL,
    theirs_commit     TEXT NOT NULL,
    merge_commit      TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    resolved_at       INTEGER,
    resolution_commit TEXT,
    UNIQUE (patient, ours_commit, theirs_commit, file, path)
);
CREATE INDEX conflicts_open ON conflicts (patient) WHERE resolved_at IS NULL;

-- Records received from central and stored, not yet acknowledged to it.
CREATE TABLE pending_acks (
    patient BLOB PRIMARY KEY,
    head    TEXT NOT NULL
) WITHOUT ROWID;

-- Job runs.
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    job         TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    ok          INTEGER NOT NULL DEFAULT 0,
    detail      TEXT
);
CREATE INDEX runs_job ON runs (job, id);
