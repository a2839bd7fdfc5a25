-- Leases of dead processes, across servers: every central process holds a
-- session-level advisory lock on a random 64-bit key for as long as it
-- runs (on one connection of its own), and writes that key into the leases
-- it takes. PostgreSQL ends a dead client's session, and with it the
-- advisory lock, so a contender that finds the key's lock free knows the
-- holder is gone and takes its lease over at once, whatever server it ran
-- on. NULL: a lease written before this migration (it expires as before).
ALTER TABLE locks ADD COLUMN owner BIGINT;
