-- Where a station is registered (issue 16, item 3): set at approval or by an admin, never by
-- the agent. The claimed location (location_json) keeps following enrollment and heartbeats;
-- the console shows both and flags an alarm whose claim differs. NULL: not registered.
ALTER TABLE devices ADD COLUMN registered_location_json TEXT;
