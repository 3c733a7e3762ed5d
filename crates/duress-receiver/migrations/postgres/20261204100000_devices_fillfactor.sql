-- Heartbeats at scale (issue 12): every heartbeat rewrites its device's row. None of the columns
-- it writes is in an index (devices has only its primary key and key_thumbprint; keep it so:
-- an index on last_heartbeat_at would be rewritten by every heartbeat), so the update can be a
-- HOT update — no index entry, same page — provided the page has room for the new version.
-- With the default fillfactor (100) pages are packed full and most heartbeats would move the
-- row to another page and add entries to both indexes; 70 % leaves room for the new version.
-- Applies to pages written from now on; `VACUUM FULL devices` (in a quiet hour) repacks the
-- existing ones.
ALTER TABLE devices SET (fillfactor = 70);
