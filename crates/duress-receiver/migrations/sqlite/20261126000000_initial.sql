-- Duress receiver, initial schema. Append-only: later changes go in new timestamped files.
-- Timestamps are TEXT 'YYYY-MM-DDTHH:MM:SS.mmmZ' (UTC, fixed width: text order = time order).
-- JSON columns hold duress-core types (Location, HostFacts, HotkeyState, Jwk) as serialised.

CREATE TABLE enrollment_tokens (
    -- SHA-256 of the token, lower-case hex. The plaintext is never stored.
    token_hash  TEXT PRIMARY KEY NOT NULL,
    approve     TEXT NOT NULL CHECK (approve IN ('auto', 'manual')),
    uses_left   INTEGER NOT NULL CHECK (uses_left >= 0),
    expires_at  TEXT,            -- NULL: never expires
    revoked     INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
    created_at  TEXT NOT NULL
) STRICT;

CREATE TABLE devices (
    device_id          TEXT PRIMARY KEY NOT NULL,  -- UUIDv7, the JWS kid
    status             TEXT NOT NULL CHECK (status IN ('active', 'pending', 'disabled', 'revoked')),
    public_jwk         TEXT NOT NULL,
    key_thumbprint     TEXT NOT NULL UNIQUE,        -- RFC 7638: one key, one device
    token_hash         TEXT NOT NULL REFERENCES enrollment_tokens (token_hash),
    hostname           TEXT NOT NULL,
    host_json          TEXT NOT NULL,
    location_json      TEXT NOT NULL,
    agent_version      TEXT NOT NULL,
    enrolled_at        TEXT NOT NULL,
    last_heartbeat_at  TEXT,
    hotkey_json        TEXT,
    queued             INTEGER,
    reported_last_seq  INTEGER,
    last_seq           INTEGER,     -- highest seq of an event received here
    last_event_at      TEXT,
    last_self_test_at  TEXT,
    last_self_test_id  TEXT
) STRICT;

CREATE TABLE incidents (
    incident_id        TEXT PRIMARY KEY NOT NULL,   -- UUIDv7
    device_id          TEXT NOT NULL REFERENCES devices (device_id),
    status             TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    opened_at          TEXT NOT NULL,   -- receiver clock, first event
    first_occurred_at  TEXT NOT NULL,   -- agent clock, first press
    last_press_at      TEXT NOT NULL,   -- agent clock, latest press: the grouping window counts from here
    press_count        INTEGER NOT NULL CHECK (press_count >= 1),
    kind               TEXT NOT NULL,
    source             TEXT NOT NULL,
    location_json      TEXT NOT NULL,
    host_json          TEXT NOT NULL,
    delayed            INTEGER NOT NULL CHECK (delayed IN (0, 1)),
    delay_ms           INTEGER NOT NULL,
    cancelled_at       TEXT
) STRICT;

CREATE INDEX incidents_open_by_device ON incidents (device_id, status, last_press_at);

CREATE TABLE events (
    id             TEXT PRIMARY KEY NOT NULL,   -- the event's UUIDv7: the idempotency key
    device_id      TEXT NOT NULL REFERENCES devices (device_id),
    incident_id    TEXT REFERENCES incidents (incident_id),  -- NULL: test, or cancel with no incident
    seq            INTEGER NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('duress', 'test', 'cancel')),
    source         TEXT NOT NULL,
    occurred_at    TEXT NOT NULL,
    sent_at        TEXT NOT NULL,
    received_at    TEXT NOT NULL,
    delay_ms       INTEGER NOT NULL,
    delayed        INTEGER NOT NULL CHECK (delayed IN (0, 1)),
    location_json  TEXT NOT NULL,
    host_json      TEXT NOT NULL,
    jws            TEXT NOT NULL                -- the request body exactly as received
) STRICT;

CREATE INDEX events_by_incident ON events (incident_id);
CREATE INDEX events_by_device ON events (device_id, seq);
