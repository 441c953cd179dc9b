-- The queue gauges (every 2 s) count the unfinished states and find their oldest entry, and the
-- retention purge finds finished deliveries by age: both without walking the retained history.
CREATE INDEX deliveries_by_state_created ON deliveries (state, created_at);
CREATE INDEX deliveries_by_state_finished ON deliveries (state, finished_at);
