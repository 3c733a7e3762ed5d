-- Receiver nodes register themselves here every ~10 s (store::cluster): the console's Cluster
-- view lists the nodes seen in the last minute. One row per node id (hostname+pid or the
-- configured name); rows are never audited, they describe processes, not people's actions.
-- SQLite has one node (the file has one writer), but it registers the same way.
CREATE TABLE cluster_nodes (
    node_id     TEXT PRIMARY KEY,
    version     TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    last_seen   TEXT NOT NULL
);
