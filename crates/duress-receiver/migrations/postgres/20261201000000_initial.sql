-- Duress receiver on PostgreSQL: the same tables as migrations/sqlite (both of its files),
-- with PostgreSQL types. Append-only: later changes go in new timestamped files.
--
-- Times are timestamptz holding values truncated to milliseconds by the receiver, so they
-- round-trip exactly (the audit chain hashes their text `YYYY-MM-DDTHH:MM:SS.mmmZ`).
-- JSON columns (jsonb) hold duress-core types (Location, HostFacts, HotkeyState, Jwk) as
-- serialised. Integers are bigint (Rust i64). Event and incident ids are uuid; device ids are
-- text, as signed (the JWS kid).

CREATE TABLE enrollment_tokens (
    -- SHA-256 of the token, lower-case hex. The plaintext is never stored.
    token_hash  text PRIMARY KEY,
    approve     text NOT NULL CHECK (approve IN ('auto', 'manual')),
    uses_left   bigint NOT NULL CHECK (uses_left >= 0),
    expires_at  timestamptz,            -- NULL: never expires
    revoked     boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL
);

CREATE TABLE devices (
    device_id          text PRIMARY KEY,           -- UUIDv7, the JWS kid
    status             text NOT NULL CHECK (status IN ('active', 'pending', 'disabled', 'revoked')),
    public_jwk         jsonb NOT NULL,
    key_thumbprint     text NOT NULL UNIQUE,        -- RFC 7638: one key, one device
    token_hash         text NOT NULL REFERENCES enrollment_tokens (token_hash),
    hostname           text NOT NULL,
    host_json          jsonb NOT NULL,
    location_json      jsonb NOT NULL,
    agent_version      text NOT NULL,
    enrolled_at        timestamptz NOT NULL,
    last_heartbeat_at  timestamptz,
    hotkey_json        jsonb,
    queued             bigint,
    reported_last_seq  bigint,
    last_seq           bigint,     -- highest seq of an event received here
    last_event_at      timestamptz,
    last_self_test_at  timestamptz,
    last_self_test_id  uuid
);

CREATE TABLE incidents (
    incident_id        uuid PRIMARY KEY,            -- UUIDv7
    device_id          text NOT NULL REFERENCES devices (device_id),
    status             text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    opened_at          timestamptz NOT NULL,   -- receiver clock, first event
    first_occurred_at  timestamptz NOT NULL,   -- agent clock, first press
    last_press_at      timestamptz NOT NULL,   -- agent clock, latest press: the grouping window counts from here
    press_count        bigint NOT NULL CHECK (press_count >= 1),
    kind               text NOT NULL,
    source             text NOT NULL,
    location_json      jsonb NOT NULL,
    host_json          jsonb NOT NULL,
    delayed            boolean NOT NULL,
    delay_ms           bigint NOT NULL,
    cancelled_at       timestamptz,
    -- How officers handle it (receiver clock): resolve closes, reopen opens again.
    claimed_by         text,         -- username of the officer handling it
    claimed_at         timestamptz,
    first_claimed_at   timestamptz,  -- for "time to claim", kept across take-overs
    escalated_at       timestamptz,  -- nobody claimed it in time
    response_level     text,
    called_911_at      timestamptz,
    resolved_at        timestamptz,
    resolved_by        text,
    disposition        text,
    follow_up          text
);

CREATE INDEX incidents_open_by_device ON incidents (device_id, status, last_press_at);
CREATE INDEX incidents_by_status ON incidents (status, opened_at);

CREATE TABLE events (
    id             uuid PRIMARY KEY,            -- the event's UUIDv7: the idempotency key
    -- Order of arrival (SQLite's rowid): ties of received_at are listed in commit order.
    arrival        bigint GENERATED ALWAYS AS IDENTITY,
    device_id      text NOT NULL REFERENCES devices (device_id),
    -- NULL: test, or cancel with no incident. Checked at commit, so ingest can insert the
    -- event first (`ON CONFLICT (id) DO NOTHING` decides dedupe before anything else is written)
    -- and its new incident after.
    incident_id    uuid REFERENCES incidents (incident_id) DEFERRABLE INITIALLY DEFERRED,
    seq            bigint NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('duress', 'test', 'cancel')),
    source         text NOT NULL,
    occurred_at    timestamptz NOT NULL,
    sent_at        timestamptz NOT NULL,
    received_at    timestamptz NOT NULL,
    delay_ms       bigint NOT NULL,
    delayed        boolean NOT NULL,
    location_json  jsonb NOT NULL,
    host_json      jsonb NOT NULL,
    jws            text NOT NULL                -- the request body exactly as received
);

CREATE INDEX events_by_incident ON events (incident_id);
CREATE INDEX events_by_device ON events (device_id, seq);
CREATE INDEX events_by_arrival ON events (received_at, arrival);
CREATE INDEX events_self_tests ON events (received_at) WHERE kind = 'test';

-- What officers did, in order: claim, take-over, note, level, 911, resolve, reopen, escalation.
CREATE TABLE incident_timeline (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id  uuid NOT NULL REFERENCES incidents (incident_id),
    at           timestamptz NOT NULL,
    actor        text NOT NULL,     -- username, or 'system' for escalation
    kind         text NOT NULL,
    text         text NOT NULL
);

CREATE INDEX incident_timeline_by_incident ON incident_timeline (incident_id, id);

CREATE TABLE users (
    username       text PRIMARY KEY,
    password_hash  text NOT NULL,  -- argon2id PHC string
    role           text NOT NULL CHECK (role IN ('officer', 'admin')),
    disabled       boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL
);

-- Server-side sessions: only the SHA-256 of the cookie value is stored.
CREATE TABLE sessions (
    id_hash       text PRIMARY KEY,
    username      text NOT NULL REFERENCES users (username),
    csrf_token    text NOT NULL,
    created_at    timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL      -- absolute lifetime; idle timeout counts from last_seen_at
);

CREATE INDEX sessions_by_user ON sessions (username);

-- The live-update log: one row per change officers must see, written in the same transaction
-- as the change. Rows are inserted under the store's log lock (an advisory lock held until
-- commit), so ids become visible in id order and a reader that continues after the last id
-- it saw misses nothing (a plain identity column can commit 11 before 10).
CREATE TABLE console_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           timestamptz NOT NULL,
    kind         text NOT NULL,
    incident_id  uuid,
    payload      json NOT NULL      -- JSON object, kept as written
);

-- Append-only, hash-chained (src/store/audit_chain.rs). Ids are 1, 2, 3, … with no gap, given
-- by the store under the log lock from `audit_head` (never a sequence, which leaves gaps on
-- rollback and could hand an id to a writer that then commits after a later one).
CREATE TABLE audit_log (
    id         bigint PRIMARY KEY CHECK (id >= 1),
    at         timestamptz NOT NULL,
    actor      text NOT NULL,
    action     text NOT NULL,
    subject    text NOT NULL,
    detail     text NOT NULL,
    prev_hash  text NOT NULL,
    hash       text NOT NULL
);

-- Location → camera link templates, edited by admins.
CREATE TABLE camera_mappings (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    match_field   text NOT NULL CHECK (match_field IN ('BLD', 'FLR', 'ROOM', 'label_prefix', 'any')),
    match_value   text NOT NULL,
    name          text NOT NULL,
    url_template  text NOT NULL,
    created_at    timestamptz NOT NULL
);

-- The chain's head: the last entry's id and hash (0 and the genesis hash while the log is
-- empty). Appends take the next id from here, not from MAX(id), so an id is never reused: if
-- the newest entries were deleted, the next entry still follows the deleted ones and
-- verification names the gap instead of a chain silently re-grown over it.
CREATE TABLE audit_head (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    id        bigint NOT NULL,
    hash      text NOT NULL
);

INSERT INTO audit_head (only_row, id, hash)
VALUES (true, 0, '0000000000000000000000000000000000000000000000000000000000000000');
