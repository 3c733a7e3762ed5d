-- The anchored audit log (src/store/audit_chain.rs): entries written from now on are keyed
-- (HMAC-SHA256 under the data directory's audit key); `keyed = false` marks the entries
-- written before, which keep verifying as plain SHA-256. (`audit_head` exists since the
-- initial migration.)
ALTER TABLE audit_log ADD COLUMN keyed boolean NOT NULL DEFAULT false;
