-- The SIEM feed (docs/operations.md, "SIEM feed"): how far each configured sink has been sent.
-- The records themselves are the audit log and the live log (console_events), both written in
-- the transaction of their change and numbered in commit order; a sink's position moves only
-- after its collector took the records (or the file was synced), so a record is sent at least
-- once and a resend carries the same id.
CREATE TABLE siem_cursors (
    sink        TEXT PRIMARY KEY NOT NULL,   -- the [[siem]] name of the configuration file
    audit_id    INTEGER NOT NULL DEFAULT 0,  -- the last audit_log id sent
    live_id     INTEGER NOT NULL DEFAULT 0,  -- the last console_events id sent
    updated_at  TEXT NOT NULL
) STRICT;
