-- Which gateways may run on this database. Every migration so far only adds tables, columns
-- and indexes, which an older gateway (one that does not know them) can ignore: it runs.
-- A migration an older gateway could not live with sets `requires` to its own version, and
-- every gateway that does not know that version refuses the database.
CREATE TABLE schema_compat (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    requires BIGINT  NOT NULL
);
INSERT INTO schema_compat (id, requires) VALUES (1, 0);
