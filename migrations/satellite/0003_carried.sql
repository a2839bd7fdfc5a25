-- Edits made here to a record that central had meanwhile merged into
-- another (retired with replaced_by): central carries them onto the
-- survivor, keeping the survivor's value where it holds a third one. Each
-- row waits until this satellite holds the survivor; then the fields where
-- the survivor's value differs from this clinic's edit are queued as
-- conflicts on the survivor, and the row goes.
CREATE TABLE carried (
    retired    BLOB NOT NULL,           -- 16-byte UUID of the retired record
    edit       TEXT NOT NULL,           -- the retired record's commit with the clinic's edits
    tombstone  TEXT NOT NULL,           -- central's tombstone the edits were merged onto
    survivor   BLOB NOT NULL,           -- the record it was merged into
    created_at INTEGER NOT NULL,        -- Unix seconds
    PRIMARY KEY (retired, edit)
) WITHOUT ROWID;
