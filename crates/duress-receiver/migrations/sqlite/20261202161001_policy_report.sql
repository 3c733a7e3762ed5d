-- The policy each station reports in its heartbeats (where it came from, SHA-256 of the
-- effective policy), so the Stations page can flag a station whose policy differs from the
-- fleet's majority. NULL until the station's first heartbeat that carries it.
ALTER TABLE devices ADD COLUMN policy_source TEXT;
ALTER TABLE devices ADD COLUMN policy_sha256 TEXT;
