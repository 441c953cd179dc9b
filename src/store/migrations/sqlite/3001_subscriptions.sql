-- HTTP subscriptions to inbound events. Times in ms.
CREATE TABLE subscriptions (
    id                      TEXT    PRIMARY KEY,        -- a UUID
    url                     TEXT    NOT NULL,
    secret                  TEXT    NOT NULL,           -- whsec_…: the receiver checks signatures with it
    inbound                 TEXT,                       -- filters, as on the event stream
    channel_id              BIGINT,
    kind                    TEXT,
    respond                 BIGINT  NOT NULL DEFAULT 0, -- called synchronously for replies to Chat
    enabled                 BIGINT  NOT NULL DEFAULT 1,
    disabled_reason         TEXT,
    consecutive_failures    BIGINT  NOT NULL DEFAULT 0,
    last_delivered_event_id BIGINT,
    fanned_out_to           BIGINT  NOT NULL,           -- events up to this id have a delivery (or did not match)
    created_at              BIGINT  NOT NULL
);

-- One delivery per (subscription, event), whichever replica or path (fan-out or a synchronous
-- reply) gets there first.
CREATE TABLE subscription_deliveries (
    subscription_id TEXT   NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    event_id        BIGINT NOT NULL,
    delivery_id     TEXT   NOT NULL,
    PRIMARY KEY (subscription_id, event_id)
);
