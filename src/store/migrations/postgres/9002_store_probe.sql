-- A counter the readiness check and the start advance, one committed write that changes only
-- this row: a database that answers reads may refuse every write (a full disk, a read-only
-- file, a standby). SQLite writes nothing for an UPDATE that leaves a row as it was, so the
-- value must change.
CREATE TABLE store_probe (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    writes BIGINT  NOT NULL
);
INSERT INTO store_probe (id, writes) VALUES (1, 0);
