-- Security console: officers' handling of incidents, accounts, sessions, the live-update log,
-- the hash-chained audit log and camera mappings. Append-only like every migration.

-- How officers handle an incident. `status` ('open' | 'closed') already exists: resolve closes,
-- reopen opens again. Times are receiver clock, same text format as everywhere else.
ALTER TABLE incidents ADD COLUMN claimed_by TEXT;       -- username of the officer handling it
ALTER TABLE incidents ADD COLUMN claimed_at TEXT;
ALTER TABLE incidents ADD COLUMN first_claimed_at TEXT; -- for "time to claim", kept across take-overs
ALTER TABLE incidents ADD COLUMN escalated_at TEXT;     -- nobody claimed it in time
ALTER TABLE incidents ADD COLUMN response_level TEXT;
ALTER TABLE incidents ADD COLUMN called_911_at TEXT;
ALTER TABLE incidents ADD COLUMN resolved_at TEXT;
ALTER TABLE incidents ADD COLUMN resolved_by TEXT;
ALTER TABLE incidents ADD COLUMN disposition TEXT;
ALTER TABLE incidents ADD COLUMN follow_up TEXT;

CREATE INDEX incidents_by_status ON incidents (status, opened_at);

-- What officers did, in order: claim, take-over, note, level, 911, resolve, reopen, escalation.
-- Presses come from `events`; the incident page merges both.
CREATE TABLE incident_timeline (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id  TEXT NOT NULL REFERENCES incidents (incident_id),
    at           TEXT NOT NULL,
    actor        TEXT NOT NULL,     -- username, or 'system' for escalation
    kind         TEXT NOT NULL,
    text         TEXT NOT NULL
) STRICT;

CREATE INDEX incident_timeline_by_incident ON incident_timeline (incident_id, id);

CREATE TABLE users (
    username       TEXT PRIMARY KEY NOT NULL,
    password_hash  TEXT NOT NULL,  -- argon2id PHC string
    role           TEXT NOT NULL CHECK (role IN ('officer', 'admin')),
    disabled       INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at     TEXT NOT NULL
) STRICT;

-- Server-side sessions. Only the SHA-256 of the cookie value is stored, so a copy of the
-- database does not let anyone sign in.
CREATE TABLE sessions (
    id_hash       TEXT PRIMARY KEY NOT NULL,
    username      TEXT NOT NULL REFERENCES users (username),
    csrf_token    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL,
    expires_at    TEXT NOT NULL      -- absolute lifetime; idle timeout counts from last_seen_at
) STRICT;

-- The live-update log: one row per change officers must see, written in the same transaction
-- as the change. The SSE endpoint sends rows in id order and replays after Last-Event-ID, so a
-- console that lost its connection misses nothing.
CREATE TABLE console_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           TEXT NOT NULL,
    kind         TEXT NOT NULL,
    incident_id  TEXT,
    payload      TEXT NOT NULL     -- JSON object
) STRICT;

-- Append-only, hash-chained: hash = SHA-256(prev_hash || canonical JSON of the row), see
-- src/console/audit.rs. `duress-receiver audit verify` recomputes the chain.
CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY,
    at         TEXT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    detail     TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
) STRICT;

-- Location → camera link templates, edited by admins.
CREATE TABLE camera_mappings (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    match_field   TEXT NOT NULL CHECK (match_field IN ('BLD', 'FLR', 'ROOM', 'label_prefix', 'any')),
    match_value   TEXT NOT NULL,
    name          TEXT NOT NULL,
    url_template  TEXT NOT NULL,
    created_at    TEXT NOT NULL
) STRICT;
