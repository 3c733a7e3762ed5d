-- Duty displays (issue 17): a browser paired by an admin as a view-only wall screen. Only the
-- SHA-256 of its cookie token and of its pairing code are stored. A pending row (code shown on
-- the screen, not yet entered by an admin) lives until code_expires_at.
CREATE TABLE console_displays (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash      TEXT NOT NULL UNIQUE,
    code_hash       TEXT UNIQUE,
    code_expires_at TEXT,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'active', 'revoked')),
    name            TEXT NOT NULL DEFAULT '',
    created_at      TEXT NOT NULL,
    paired_at       TEXT,
    paired_by       TEXT,
    last_seen_at    TEXT,
    revoked_at      TEXT,
    revoked_by      TEXT
);
CREATE INDEX console_displays_by_state ON console_displays (state);
