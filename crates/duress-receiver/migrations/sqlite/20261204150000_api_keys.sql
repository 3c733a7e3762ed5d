-- Integration API keys (issue 14, item 4): created by an admin, scoped read or read-write,
-- revocable. Only the SHA-256 of the key is kept (the key is shown once at creation); the id
-- is what lists, audit entries and `apikey revoke` name, never the key.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    key_hash    TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    scope       TEXT NOT NULL CHECK (scope IN ('read', 'read-write')),
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    revoked_at  TEXT,
    revoked_by  TEXT
);
