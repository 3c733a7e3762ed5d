-- Desk phones as stations (issue 14, item 1; docs/integrations.md "Desk phones"). Each phone
-- of the inventory is also a `devices` row (events and incidents name a device), created by
-- `phones import` with a key no JWS can verify against and never a heartbeat (so supervision,
-- which skips never-seen stations, leaves it alone). Those rows hang off one enrollment token,
-- 'phone-inventory' (revoked, used up, and no SHA-256 hex, so no presented token matches it),
-- which the first import inserts; token listings leave it out.
CREATE TABLE phones (
    -- As CUCM substitutes #DEVICENAME# (SEP + MAC, upper case); lookups use upper case.
    device_name      TEXT PRIMARY KEY NOT NULL,
    device_id        TEXT NOT NULL UNIQUE REFERENCES devices (device_id),
    extension        TEXT NOT NULL,
    label            TEXT NOT NULL,
    building         TEXT,
    floor            TEXT,
    room             TEXT,
    -- argon2id PHC string of the per-phone secret; the secret itself is never stored.
    secret_hash      TEXT NOT NULL,
    -- The network a request from this phone must come from, canonical CIDR text.
    allowed_network  TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
) STRICT;

-- Spectralink/Cisco wireless phones report the access point they are associated with: the
-- BSSID (lower-case aa:bb:cc:dd:ee:ff) locates the press better than the inventory's desk.
CREATE TABLE phone_access_points (
    bssid       TEXT PRIMARY KEY NOT NULL,
    label       TEXT NOT NULL,
    building    TEXT,
    floor       TEXT,
    room        TEXT,
    created_at  TEXT NOT NULL
) STRICT;
