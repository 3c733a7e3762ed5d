//! The console's Cluster view (`GET /admin/cluster`, admins) on the backend
//! `DURESS_TEST_DATABASE` names: this node is listed (it registered itself), and the database's
//! role is shown — SQLite's one file, or a PostgreSQL primary without standbys (the standby
//! case is tests/cluster_standby.rs). Officers are refused.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use common::console::{Console, add_user};
use duress_receiver::store::Role;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_view_lists_this_node_and_the_database_role() {
    let h = Harness::start().await;
    add_user(h.data_dir(), "admin", Role::Admin).await;
    add_user(h.data_dir(), "officer", Role::Officer).await;
    let admin = Console::sign_in(&h, "admin").await;

    let node_id = format!(
        "{}-{}",
        gethostname::gethostname().to_string_lossy(),
        std::process::id()
    );
    // The node registers at start; the page may be asked for first.
    let start = Instant::now();
    let html = loop {
        let page = admin.get("/admin/cluster").await;
        assert_eq!(page.status, 200, "{}", page.text());
        let html = page.text();
        if html.contains(&format!("data-node=\"{node_id}\"")) {
            break html;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{html}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(html.contains("(this node)"), "{html}");
    assert!(html.contains(env!("CARGO_PKG_VERSION")), "{html}");
    assert!(html.contains("aria-current=\"page\">Cluster<"), "{html}");
    if h.on_postgres() {
        assert!(html.contains("class=\"db-role\">primary<"), "{html}");
        assert!(html.contains("class=\"db-synchronous\">no<"), "{html}");
        assert!(html.contains("No standby is connected"), "{html}");
    } else {
        assert!(
            html.contains("class=\"db-role\">single file (SQLite)<"),
            "{html}"
        );
        assert!(!html.contains("db-synchronous"), "{html}");
    }
    // A single server by design: no redundancy banner.
    assert!(!html.contains("redundancy degraded"), "{html}");

    let officer = Console::sign_in(&h, "officer").await;
    let refused = officer.get("/admin/cluster").await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    h.shutdown().await;
}
