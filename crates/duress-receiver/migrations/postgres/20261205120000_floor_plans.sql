-- Floor plans (issue 17): one image per building and floor, re-encoded as PNG by the receiver
-- (never the uploaded bytes), and the rooms placed on it as fractions of its width and height.
-- Kept in the database so every receiver node of a cluster serves the same plan.
CREATE TABLE floor_plans (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    building    text NOT NULL,
    floor       text NOT NULL,
    png         bytea NOT NULL,
    width       integer NOT NULL CHECK (width > 0),
    height      integer NOT NULL CHECK (height > 0),
    sha256      text NOT NULL,
    uploaded_at timestamptz NOT NULL,
    uploaded_by text NOT NULL,
    UNIQUE (building, floor)
);
CREATE TABLE floor_plan_places (
    plan_id   bigint NOT NULL REFERENCES floor_plans (id) ON DELETE CASCADE,
    room      text NOT NULL,
    x         double precision NOT NULL CHECK (x >= 0 AND x <= 1),
    y         double precision NOT NULL CHECK (y >= 0 AND y <= 1),
    placed_at timestamptz NOT NULL,
    placed_by text NOT NULL,
    PRIMARY KEY (plan_id, room)
);
