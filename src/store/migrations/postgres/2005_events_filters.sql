-- The events page and a lagging stream filter by inbound, channel or kind after an event id:
-- without these, a filter that matches nothing read every retained event.
CREATE INDEX events_by_inbound ON events (inbound, event_id);
CREATE INDEX events_by_channel ON events (channel_id, event_id);
CREATE INDEX events_by_kind ON events (kind, event_id);
