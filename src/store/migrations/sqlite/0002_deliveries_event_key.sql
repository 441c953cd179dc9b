-- The sender's id of the event a hook's message came from (GitHub's X-GitHub-Delivery, an
-- Alertmanager group's digest...): a second message with the same key from the same caller is
-- the same event again, and is answered with the first delivery instead of posted twice.
-- NULLs never conflict, so deliveries without a key are unaffected.
ALTER TABLE deliveries ADD COLUMN event_key TEXT;
CREATE UNIQUE INDEX deliveries_by_event_key ON deliveries (caller, event_key);
