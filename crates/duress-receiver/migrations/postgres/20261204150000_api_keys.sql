-- Integration API keys (issue 14, item 4): created by an admin, scoped read or read-write,
-- revocable. Only the SHA-256 of the key is kept (the key is shown once at creation); the id
-- is what lists, audit entries and `apikey revoke` name, never the key.
CREATE TABLE api_keys (
    id          text PRIMARY KEY,
    key_hash    text NOT NULL UNIQUE,
    name        text NOT NULL,
    scope       text NOT NULL CHECK (scope IN ('read', 'read-write')),
    created_at  timestamptz NOT NULL,
    created_by  text NOT NULL,
    revoked_at  timestamptz,
    revoked_by  text
);
