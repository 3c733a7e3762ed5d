-- Signed acknowledgements (docs/protocol.md §5.4): every signature the receiver answered an
-- event with, so `events export` lets anyone re-verify them. One row per event and key: the
-- first commit's signature, and one more per acknowledgement key a repeat was answered with
-- after a rotation. The newest row (highest n) is the one repeats answer with.
CREATE TABLE event_acks (
    n          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id   uuid NOT NULL REFERENCES events (id),
    kid        text NOT NULL,          -- RFC 7638 thumbprint of public_jwk
    public_jwk text NOT NULL,          -- the JWK as JSON
    sig        text NOT NULL,          -- base64url Ed25519 signature
    signed_at  timestamptz NOT NULL,
    UNIQUE (event_id, kid)
);
