-- Same-room grouping (issue 17, "Response work"): the room an incident was opened in
-- (`incidents::room_key`: building, floor and room, case-folded), written when it opens; NULL
-- when the station's location names no room (such an incident never groups). Incidents
-- opened before this migration have none either, so they never gather other stations.
ALTER TABLE incidents ADD COLUMN room_key TEXT;
-- What same-room grouping reads inside the event's write: the room's latest open incident.
CREATE INDEX incidents_open_by_room ON incidents (room_key, last_press_at)
    WHERE status = 'open' AND room_key IS NOT NULL;
