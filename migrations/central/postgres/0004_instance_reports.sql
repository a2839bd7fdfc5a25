-- What each satellite reports with its sync calls: the latest report per
-- instance, and an hourly series kept 15 days for HQ's page.

CREATE TABLE instance_reports (
    instance BIGINT PRIMARY KEY,
    at       BIGINT NOT NULL,   -- Unix seconds central received it
    report   TEXT NOT NULL,     -- the report, JSON
    lag      BIGINT NOT NULL    -- changes in its scope after its pull cursor (capped)
);

CREATE TABLE instance_activity (
    instance  BIGINT NOT NULL,
    hour      BIGINT NOT NULL,  -- Unix seconds / 3600
    calls     BIGINT NOT NULL,  -- sync calls in that hour
    lag       BIGINT NOT NULL,  -- the latest lag in that hour
    pending   BIGINT NOT NULL,
    conflicts BIGINT NOT NULL,
    PRIMARY KEY (instance, hour)
);
