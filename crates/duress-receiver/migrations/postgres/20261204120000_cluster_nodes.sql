-- Receiver nodes register themselves here every ~10 s (store::cluster): the console's Cluster
-- view lists the nodes seen in the last minute. One row per node id (hostname+pid or the
-- configured name); rows are never audited, they describe processes, not people's actions.
-- The upsert commits with synchronous_commit = local: it must keep working (and the view keep
-- showing the nodes) while a lost synchronous standby blocks ordinary commits.
CREATE TABLE cluster_nodes (
    node_id     text PRIMARY KEY,
    version     text NOT NULL,
    started_at  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL
);
