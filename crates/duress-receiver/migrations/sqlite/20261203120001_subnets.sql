-- Network evidence of where a station is (issue 16, item 3, "location drift"): an
-- admin-maintained map of subnets to buildings (and optionally floors), and the client address
-- each heartbeat and event came from. cidr is the network in canonical form ("10.1.0.0/16"),
-- so one network has one row.
CREATE TABLE subnets (
    cidr        TEXT PRIMARY KEY,
    building    TEXT NOT NULL,
    floor       TEXT,
    created_at  TEXT NOT NULL
);
-- The address of the station's latest heartbeat or event (NULL before the first one after
-- this migration), and the address each event came from.
ALTER TABLE devices ADD COLUMN last_addr TEXT;
ALTER TABLE events ADD COLUMN client_addr TEXT;
