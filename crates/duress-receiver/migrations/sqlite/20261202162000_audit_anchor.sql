-- The anchored audit log (src/store/audit_chain.rs): entries written from now on are keyed
-- (HMAC-SHA256 under the data directory's audit key); `keyed = 0` marks the entries written
-- before, which keep verifying as plain SHA-256. And the chain's head in its own row, so that
-- an id is never reused: appends take the next id from here, not from MAX(id), so deleting the
-- newest entries leaves a gap that verification names instead of a chain re-grown over it.
ALTER TABLE audit_log ADD COLUMN keyed INTEGER NOT NULL DEFAULT 0 CHECK (keyed IN (0, 1));

CREATE TABLE audit_head (
    only_row  INTEGER PRIMARY KEY CHECK (only_row = 1),
    id        INTEGER NOT NULL,
    hash      TEXT NOT NULL
) STRICT;

INSERT INTO audit_head (only_row, id, hash)
SELECT 1,
       COALESCE((SELECT MAX(id) FROM audit_log), 0),
       COALESCE((SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1),
                '0000000000000000000000000000000000000000000000000000000000000000');
