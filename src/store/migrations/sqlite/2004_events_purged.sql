-- The highest event id the retention purge has deleted: a reader resuming below it has missed
-- events, and is told so instead of silently starting at the oldest event kept.
CREATE TABLE events_purged (
    singleton   INTEGER PRIMARY KEY CHECK (singleton = 1),
    through_id  BIGINT  NOT NULL
);
