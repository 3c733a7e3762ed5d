-- Duty displays (issue 17): a browser paired by an admin as a view-only wall screen. Only the
-- SHA-256 of its cookie token and of its pairing code are stored. A pending row (code shown on
-- the screen, not yet entered by an admin) lives until code_expires_at.
CREATE TABLE console_displays (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash      text NOT NULL UNIQUE,
    code_hash       text UNIQUE,
    code_expires_at timestamptz,
    state           text NOT NULL CHECK (state IN ('pending', 'active', 'revoked')),
    name            text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL,
    paired_at       timestamptz,
    paired_by       text,
    last_seen_at    timestamptz,
    revoked_at      timestamptz,
    revoked_by      text
);
CREATE INDEX console_displays_by_state ON console_displays (state);
