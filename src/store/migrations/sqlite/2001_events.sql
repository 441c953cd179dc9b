-- Events received from Chat (outgoing webhooks, slash commands, chatbots). Times in ms.
CREATE TABLE events (
    event_id     INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, increasing in commit order
    inbound      TEXT    NOT NULL,                   -- the configured inbound name it arrived on
    kind         TEXT    NOT NULL,                   -- message, slash_command, chatbot, trigger_word
    channel_id   BIGINT,
    channel_name TEXT,
    user_id      BIGINT,
    username     TEXT,
    post_id      BIGINT,                             -- NULL when Chat sent none (no deduplication)
    thread_id    BIGINT,
    timestamp    BIGINT,                             -- Chat's own time of the post
    text         TEXT    NOT NULL,
    trigger_word TEXT,
    command      TEXT,
    received_at  BIGINT  NOT NULL
);
-- Chat may send the same post twice.
CREATE UNIQUE INDEX events_once_per_post ON events (inbound, post_id);
CREATE INDEX events_by_age ON events (received_at);
