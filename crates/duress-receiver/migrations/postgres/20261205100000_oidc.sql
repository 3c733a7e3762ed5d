-- Console single sign-on (issue 17): accounts are local (a password) or SSO (an OpenID Connect
-- subject). An SSO account never signs in with a password; a local one never through SSO.
-- sso_issuer/sso_subject are NULL for local accounts and for SSO accounts an admin created
-- before their first sign-in (bound to the subject at that sign-in).
ALTER TABLE users ADD COLUMN auth text NOT NULL DEFAULT 'password' CHECK (auth IN ('password', 'oidc'));
ALTER TABLE users ADD COLUMN sso_issuer text;
ALTER TABLE users ADD COLUMN sso_subject text;
CREATE UNIQUE INDEX users_by_sso_subject ON users (sso_issuer, sso_subject)
    WHERE sso_issuer IS NOT NULL;

-- Pending sign-ins (the authorization-code flow between the redirect to the provider and its
-- callback), in the store so that any node of a cluster can take the callback. Keyed by the
-- SHA-256 of `state`; browser_hash is the SHA-256 of the short-lived cookie that binds the flow
-- to the browser that started it. Single use (deleted when taken), at most 10 minutes.
CREATE TABLE oidc_flows (
    state_hash    text PRIMARY KEY,
    browser_hash  text NOT NULL,
    nonce         text NOT NULL,
    pkce_verifier text NOT NULL,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL
);
CREATE INDEX oidc_flows_by_expiry ON oidc_flows (expires_at);
