-- Issue 12: why a station's queued alarm is being refused, as its latest heartbeat says
-- ("alert not accepted by the receiver: REASON" on the station); NULL when nothing is refused.
ALTER TABLE devices ADD COLUMN alarm_refused TEXT;
