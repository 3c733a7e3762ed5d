-- Local accounts' security (issue 17): admin password resets, the TOTP second factor, and the
-- sign-in steps between a right password and a session (store/account_security.rs).

-- An admin reset the account's password: at the next sign-in the user must choose a new one
-- before any session exists. The row goes when they do.
CREATE TABLE password_resets (
    username  text PRIMARY KEY REFERENCES users (username),
    reset_by  text NOT NULL,
    reset_at  timestamptz NOT NULL
);

-- RFC 6238 second factor. The secret is sealed (nonce || AES-256-GCM ciphertext) under the key
-- file DATA_DIR/totp-secrets.key (the same file on every node), never stored in clear. A row is
-- pending until the user confirms a code; last_step (the time step of the last accepted code)
-- refuses replays, moved forwards only by one conditional UPDATE.
CREATE TABLE user_totp (
    username       text PRIMARY KEY REFERENCES users (username),
    sealed_secret  bytea NOT NULL,
    enabled        boolean NOT NULL DEFAULT false,
    last_step      bigint,
    created_at     timestamptz NOT NULL
);

-- The part of a sign-in after its password (a code, a new password still owed). Only the
-- SHA-256 of its cookie value is stored; a step lives five minutes.
CREATE TABLE sign_in_steps (
    id_hash     text PRIMARY KEY,
    username    text NOT NULL REFERENCES users (username),
    stage       text NOT NULL CHECK (stage IN ('code', 'new-password')),
    failures    integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX sign_in_steps_by_user ON sign_in_steps (username);
