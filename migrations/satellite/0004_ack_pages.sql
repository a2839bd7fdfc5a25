-- Protocol 5 acknowledges a record fetched in a fetch-new page by the
-- page's cursor and its id: central finds the head the page sent (the
-- record's head as of that cursor) itself. The head stays, for a central
-- of protocol 4 or older (acknowledged by head) and to tell a newer
-- acknowledgement of the same record. NULL: acknowledged by head (a
-- record that moved since its page, or was fetched whole or by id).
ALTER TABLE pending_acks ADD COLUMN page_cursor INTEGER;
