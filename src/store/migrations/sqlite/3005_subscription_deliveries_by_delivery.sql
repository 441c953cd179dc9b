-- From a delivery to its subscription's record: the backlog check before a synchronous reply
-- and the retention purge's test for a record look rows up by delivery id.
CREATE INDEX subscription_deliveries_by_delivery
    ON subscription_deliveries (delivery_id, subscription_id, event_id);
