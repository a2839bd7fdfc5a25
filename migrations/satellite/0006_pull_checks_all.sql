-- Tombstones (records merged into another at central) bring the record
-- that replaced them. Satellites before this version looked for them in
-- every record a pull listed, including those fetch-new had just created,
-- which opened every record's repository on a clinic's first pull (about
-- 150 records a second with the repositories cold). Now the records whose
-- head moves are looked at as they are stored, by fetch-new as by pull.
-- A satellite that already holds records may hold some that an older
-- fetch-new created and no pull has looked at yet: its next pull looks at
-- every record it lists once more (see satellite/src/jobs/pull.rs).
INSERT INTO state (key, value)
SELECT 'pull_checks_all', 1 WHERE EXISTS (SELECT 1 FROM records);
