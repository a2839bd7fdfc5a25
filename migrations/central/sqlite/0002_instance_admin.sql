-- Instance administration (`chartsync central instance list|revoke|rotate`).
-- `revoked_at` exists since 0001; revoking sets it.

-- When the instance last made an authenticated request (Unix seconds;
-- written at most about once a minute per instance). NULL: never seen.
ALTER TABLE instances ADD COLUMN last_seen INTEGER;

-- When its token was last replaced (`instance rotate`). NULL: never.
ALTER TABLE instances ADD COLUMN token_rotated_at INTEGER;

-- 'instances' counts changes to who may authenticate (an instance added,
-- revoked, or given a new token). Every central process polls it and drops
-- its cached token lookups when it moves, so a revocation takes effect in
-- a running central within seconds.
INSERT INTO counters (name, value) VALUES ('instances', 0);

-- Registration refuses a name another instance has (names appear in every
-- commit's history).
CREATE INDEX instances_name ON instances (name);
