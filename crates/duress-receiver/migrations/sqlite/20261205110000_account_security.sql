-- Local accounts' security (issue 17): admin password resets, the TOTP second factor, and the
-- sign-in steps between a right password and a session (store/account_security.rs).

-- An admin reset the account's password: at the next sign-in the user must choose a new one
-- before any session exists. The row goes when they do.
CREATE TABLE password_resets (
    username  TEXT PRIMARY KEY REFERENCES users (username),
    reset_by  TEXT NOT NULL,
    reset_at  TEXT NOT NULL
);

-- RFC 6238 second factor. The secret is sealed (nonce || AES-256-GCM ciphertext) under the key
-- file DATA_DIR/totp-secrets.key, never stored in clear. A row is pending until the user
-- confirms a code; last_step (the time step of the last accepted code) refuses replays.
CREATE TABLE user_totp (
    username       TEXT PRIMARY KEY REFERENCES users (username),
    sealed_secret  BLOB NOT NULL,
    enabled        INTEGER NOT NULL DEFAULT 0,
    last_step      INTEGER,
    created_at     TEXT NOT NULL
);

-- The part of a sign-in after its password (a code, a new password still owed). Only the
-- SHA-256 of its cookie value is stored; a step lives five minutes.
CREATE TABLE sign_in_steps (
    id_hash     TEXT PRIMARY KEY,
    username    TEXT NOT NULL REFERENCES users (username),
    stage       TEXT NOT NULL CHECK (stage IN ('code', 'new-password')),
    failures    INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);
CREATE INDEX sign_in_steps_by_user ON sign_in_steps (username);
