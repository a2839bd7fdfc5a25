-- Sync protocol 6: a fetch-new page whose records were all stored at the
-- heads it sent is acknowledged by the token central gave the page alone
-- (central keeps the ids the page offered). NULL: acknowledged by the
-- page's ids (protocol 5), or by head (see page_cursor).
ALTER TABLE pending_acks ADD COLUMN page_token INTEGER;
