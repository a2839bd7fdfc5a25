-- What each satellite reports with its sync calls (pending pushes, open
-- conflicts, set-aside records, last runs, free disk): the latest report
-- per instance, and an hourly series kept 15 days for HQ's page.

CREATE TABLE instance_reports (
    instance INTEGER PRIMARY KEY,
    at       INTEGER NOT NULL,  -- Unix seconds central received it
    report   TEXT NOT NULL,     -- the report, JSON
    lag      INTEGER NOT NULL   -- changes in its scope after its pull cursor (capped)
);

CREATE TABLE instance_activity (
    instance  INTEGER NOT NULL,
    hour      INTEGER NOT NULL,  -- Unix seconds / 3600
    calls     INTEGER NOT NULL,  -- sync calls in that hour
    lag       INTEGER NOT NULL,  -- the latest lag in that hour
    pending   INTEGER NOT NULL,
    conflicts INTEGER NOT NULL,
    PRIMARY KEY (instance, hour)
) WITHOUT ROWID;
