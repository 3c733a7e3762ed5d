-- Retired stations (docs/operations.md, "Retiring a station"): a retired device is also
-- `revoked` (so every existing check refuses its key and the supervision sweep skips it); these
-- columns say it was retired on purpose, when and by whom (the agent itself, `device:ID`, or an
-- admin), so the Stations page hides it instead of listing it revoked or offline for ever.
ALTER TABLE devices ADD COLUMN retired_at TEXT;
ALTER TABLE devices ADD COLUMN retired_by TEXT;
