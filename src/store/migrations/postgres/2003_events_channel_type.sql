-- The channel's type as Chat's outgoing webhook reports it (a number, 1 in real captures).
ALTER TABLE events ADD COLUMN channel_type BIGINT;
