-- Same-room grouping, the joining station's side: which open incidents of *other* stations a
-- station's press joined. Its heartbeats' covert acknowledgement (`claimed_incidents`) lists
-- these beside its own incidents, so a frightened person whose press joined the room's incident
-- learns that help is coming too. Written in the event's transaction; read per heartbeat by
-- the primary key (one range probe, usually empty).
CREATE TABLE incident_joins (
    device_id   TEXT NOT NULL,
    incident_id TEXT NOT NULL REFERENCES incidents (incident_id) ON DELETE CASCADE,
    PRIMARY KEY (device_id, incident_id)
) STRICT, WITHOUT ROWID;
-- Presses that joined before this migration.
INSERT OR IGNORE INTO incident_joins (device_id, incident_id)
    SELECT DISTINCT e.device_id, e.incident_id FROM events e
      JOIN incidents i ON i.incident_id = e.incident_id
     WHERE e.device_id <> i.device_id;
