-- PostgreSQL's migration of the same number sets the devices table's fillfactor so heartbeat
-- updates stay HOT. SQLite has no such setting and its heartbeats go through the group-commit
-- writer already: nothing to change; this file keeps the two migration lists in step.
SELECT 1;
