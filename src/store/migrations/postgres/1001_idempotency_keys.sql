-- Idempotency-Key records: the first answer to a write, replayed to repeats of the same key.
-- Times are milliseconds since the Unix epoch.
CREATE TABLE idempotency_keys (
    scope        TEXT    NOT NULL,          -- API key name ('' when authentication is off)
    method       TEXT    NOT NULL,
    path         TEXT    NOT NULL,
    key          TEXT    NOT NULL,          -- the Idempotency-Key value
    fingerprint  TEXT    NOT NULL,          -- hex SHA-256 of content type, query and body
    owner        TEXT    NOT NULL,          -- random id of the request that holds the key
    state        TEXT    NOT NULL,          -- running or done
    lease_until  BIGINT  NOT NULL,          -- a running record past this is abandoned (crash)
    status       BIGINT,                    -- the stored answer, once done
    headers      TEXT,                      -- JSON array of [name, value]
    body         BYTEA,
    created_at   BIGINT  NOT NULL,
    expires_at   BIGINT  NOT NULL,
    PRIMARY KEY (scope, method, path, key)
);
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
