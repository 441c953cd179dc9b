-- The outbox. Times are milliseconds since the Unix epoch; JSON is stored as text.
CREATE TABLE deliveries (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,  -- order of arrival (FIFO per target)
    id              TEXT    NOT NULL UNIQUE,            -- the public delivery id
    caller          TEXT    NOT NULL,                   -- API key name that enqueued it
    target          TEXT    NOT NULL,                   -- channel:<id>, user:<id> or token:<name>
    request         TEXT    NOT NULL,                   -- what to send (JSON)
    chunks          TEXT    NOT NULL,                   -- the message's chunks, in order (JSON array)
    state           TEXT    NOT NULL,                   -- queued, sending, delivered, failed, cancelled
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT,
    uncertain_since BIGINT,                             -- a send whose outcome is unknown, to check first
    at_least_once   INTEGER NOT NULL DEFAULT 0,         -- a token send was repeated after an unknown outcome
    last_error      TEXT,                               -- problem object (JSON)
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    finished_at     BIGINT,
    expires_at      BIGINT  NOT NULL
);
CREATE INDEX deliveries_by_state ON deliveries (state, target, seq);

-- Progress per chunk: a chunk with a row here is posted and never posted again. A chatbot
-- chunk has one row per recipient.
CREATE TABLE delivery_posts (
    delivery_id TEXT    NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    chunk       INTEGER NOT NULL,
    recipient   BIGINT  NOT NULL DEFAULT 0,                -- the chatbot recipient, else 0
    post_id     BIGINT,                                 -- none for incoming-webhook sends
    posted_at   BIGINT  NOT NULL,
    PRIMARY KEY (delivery_id, chunk, recipient)
);
-- The duplicate check after an ambiguous send skips posts another delivery already owns.
CREATE INDEX delivery_posts_by_post ON delivery_posts (post_id);

-- One row per target: pacing (rate limits) and, on PostgreSQL, the row a worker locks.
CREATE TABLE targets (
    target       TEXT   PRIMARY KEY,
    next_send_at BIGINT NOT NULL DEFAULT 0,
    penalty_ms   BIGINT NOT NULL DEFAULT 0              -- extra spacing after DSM 411 (rate limited)
);
