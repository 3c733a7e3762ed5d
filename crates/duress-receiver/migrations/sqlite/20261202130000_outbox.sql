-- The notifier outbox (docs/integrations.md). A row is written in the same transaction as the
-- change that causes it (a new incident, a station going offline) and delivered by a worker
-- apart from the alarm path. Its id is the idempotency key sent downstream (webhook-id,
-- Message-ID, ...). A row leaves 'pending' only when a delivery is recorded (delivered,
-- accepted), when it is given up (failed), or when a claim/resolve stops its ladder (stopped).
CREATE TABLE notifications (
    id                TEXT PRIMARY KEY,               -- UUIDv7: the idempotency key
    incident_id       TEXT REFERENCES incidents (incident_id),
    device_id         TEXT,                            -- the station (supervision), or the incident's
    reason            TEXT NOT NULL,                   -- incident | test | offline
    channel           TEXT NOT NULL,                   -- a channel name of the config file
    ladder            TEXT,
    step              INTEGER NOT NULL DEFAULT 0,
    repeat_index      INTEGER NOT NULL DEFAULT 0,
    stop_on_claim     INTEGER NOT NULL DEFAULT 0,      -- a claim or resolve stops it
    payload_json      TEXT NOT NULL,                   -- the facts at the time of the change
    created_at        TEXT NOT NULL,
    due_at            TEXT NOT NULL,
    status            TEXT NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'delivered', 'accepted', 'failed', 'stopped')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   TEXT NOT NULL,
    lease_owner       TEXT,
    lease_until       TEXT,
    done_at           TEXT
);
CREATE INDEX notifications_due ON notifications (status, next_attempt_at);
CREATE INDEX notifications_by_incident ON notifications (incident_id);

CREATE TABLE notification_attempts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    notification_id  TEXT NOT NULL REFERENCES notifications (id),
    at               TEXT NOT NULL,
    outcome          TEXT NOT NULL,     -- delivered | accepted | error
    http_status      INTEGER,
    error            TEXT
);
CREATE INDEX notification_attempts_by_notification ON notification_attempts (notification_id, id);

-- When the stale/offline sweep last ran (one row per receiver process name), and which
-- stations it has already reported offline (so each outage notifies once).
CREATE TABLE supervision_state (
    device_id        TEXT PRIMARY KEY REFERENCES devices (device_id),
    offline_since    TEXT NOT NULL,
    notified_at      TEXT NOT NULL
);
CREATE TABLE sweep_runs (
    name             TEXT PRIMARY KEY,
    last_run_at      TEXT NOT NULL
);
