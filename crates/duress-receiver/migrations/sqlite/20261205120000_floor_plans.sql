-- Floor plans (issue 17): one image per building and floor, re-encoded as PNG by the receiver
-- (never the uploaded bytes), and the rooms placed on it as fractions of its width and height.
-- Kept in the database so every receiver node of a cluster serves the same plan.
CREATE TABLE floor_plans (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    building    TEXT NOT NULL,
    floor       TEXT NOT NULL,
    png         BLOB NOT NULL,
    width       INTEGER NOT NULL CHECK (width > 0),
    height      INTEGER NOT NULL CHECK (height > 0),
    sha256      TEXT NOT NULL,
    uploaded_at TEXT NOT NULL,
    uploaded_by TEXT NOT NULL,
    UNIQUE (building, floor)
);
CREATE TABLE floor_plan_places (
    plan_id   INTEGER NOT NULL REFERENCES floor_plans (id) ON DELETE CASCADE,
    room      TEXT NOT NULL,
    x         REAL NOT NULL CHECK (x >= 0 AND x <= 1),
    y         REAL NOT NULL CHECK (y >= 0 AND y <= 1),
    placed_at TEXT NOT NULL,
    placed_by TEXT NOT NULL,
    PRIMARY KEY (plan_id, room)
);
