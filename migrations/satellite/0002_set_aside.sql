-- Records set aside: a record that cannot be applied, merged, stored or
-- received here (too large once merged, invalid, refused, damaged) waits
-- here with its reason, while every other record and every job goes on.
-- A row goes away as soon as the record syncs again.
CREATE TABLE set_aside (
    patient      BLOB PRIMARY KEY,      -- 16-byte UUID
    job          TEXT NOT NULL,         -- push, pull or fetch-new: the job that set it aside
    reason       TEXT NOT NULL,         -- for people: what is wrong and what to do
    central_head TEXT,                  -- central's head that could not be stored here, if any
    local_head   TEXT,                  -- the local head then (push skips it until it moves)
    since        INTEGER NOT NULL,      -- Unix seconds, first set aside
    attempts     INTEGER NOT NULL DEFAULT 1,
    retry_at     INTEGER NOT NULL       -- Unix seconds: when pull tries it again
) WITHOUT ROWID;
