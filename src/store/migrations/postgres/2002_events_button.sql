-- A click on a chatbot's button (JSON: the clicked message's post_id, callback_id, actions).
-- Clicks keep post_id NULL: several clicks on one message are several events, and the unique
-- index on (inbound, post_id) stays as it is for replicas still running the previous version.
ALTER TABLE events ADD COLUMN button TEXT;
