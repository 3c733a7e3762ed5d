-- The notifier outbox (docs/integrations.md); see the SQLite migration of the same name.
-- Several receivers share it: a worker takes due rows with FOR UPDATE SKIP LOCKED and a lease.
CREATE TABLE notifications (
    id                uuid PRIMARY KEY,                -- UUIDv7: the idempotency key
    incident_id       uuid REFERENCES incidents (incident_id),
    device_id         text,
    reason            text NOT NULL,
    channel           text NOT NULL,
    ladder            text,
    step              integer NOT NULL DEFAULT 0,
    repeat_index      integer NOT NULL DEFAULT 0,
    stop_on_claim     boolean NOT NULL DEFAULT false,
    payload_json      jsonb NOT NULL,
    created_at        timestamptz NOT NULL,
    due_at            timestamptz NOT NULL,
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'delivered', 'accepted', 'failed', 'stopped')),
    attempts          integer NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL,
    lease_owner       text,
    lease_until       timestamptz,
    done_at           timestamptz
);
CREATE INDEX notifications_due ON notifications (status, next_attempt_at);
CREATE INDEX notifications_by_incident ON notifications (incident_id);

CREATE TABLE notification_attempts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id  uuid NOT NULL REFERENCES notifications (id),
    at               timestamptz NOT NULL,
    outcome          text NOT NULL,
    http_status      integer,
    error            text
);
CREATE INDEX notification_attempts_by_notification ON notification_attempts (notification_id, id);

CREATE TABLE supervision_state (
    device_id        text PRIMARY KEY REFERENCES devices (device_id),
    offline_since    timestamptz NOT NULL,
    notified_at      timestamptz NOT NULL
);
CREATE TABLE sweep_runs (
    name             text PRIMARY KEY,
    last_run_at      timestamptz NOT NULL
);
