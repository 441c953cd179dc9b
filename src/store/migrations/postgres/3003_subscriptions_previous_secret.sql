-- A rotated secret: the one it replaced keeps signing deliveries beside it until then (ms), so
-- receivers can switch over without rejecting a delivery.
ALTER TABLE subscriptions ADD COLUMN previous_secret TEXT;
ALTER TABLE subscriptions ADD COLUMN previous_secret_until BIGINT;
