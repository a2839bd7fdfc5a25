-- Instance administration (`chartsync central instance list|revoke|rotate`).

-- When the instance last made an authenticated request (Unix seconds;
-- written at most about once a minute per instance). NULL: never seen.
ALTER TABLE instances ADD COLUMN last_seen BIGINT;

-- When its token was last replaced (`instance rotate`). NULL: never.
ALTER TABLE instances ADD COLUMN token_rotated_at BIGINT;

-- 'instances' counts changes to who may authenticate (an instance added,
-- revoked, or given a new token). Every central process polls it and drops
-- its cached token lookups when it moves.
INSERT INTO counters (name, value) VALUES ('instances', 0);

CREATE INDEX instances_name ON instances (name);
