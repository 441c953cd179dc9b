-- When the subscription was disabled (ms): enabling it again re-queues the deliveries failed or
-- cancelled since then.
ALTER TABLE subscriptions ADD COLUMN disabled_at BIGINT;
