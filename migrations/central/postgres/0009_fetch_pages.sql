-- Sync protocol 6: the records each fetch-new page offered an instance,
-- under a random token the reply carries, so that the instance can
-- acknowledge a page whose records it stored at the heads the page sent
-- by the token alone (16 bytes a record less on the wire). A row goes
-- once the page is acknowledged, or after a week (the satellite then
-- acknowledges the page by its ids). `ids` is 16 bytes per record.
CREATE TABLE fetch_pages (
    instance_id bigint  NOT NULL,
    page        bigint  NOT NULL,
    cursor      bigint  NOT NULL,
    ids         bytea   NOT NULL,
    offered_at  bigint  NOT NULL,
    PRIMARY KEY (instance_id, page)
);
CREATE INDEX fetch_pages_offered_at ON fetch_pages (offered_at);
