-- The highest event id the retention purge deleted before the subscription was handed it (it
-- was disabled longer than the retention): shown, so the loss is known.
ALTER TABLE subscriptions ADD COLUMN events_missed_through BIGINT;
