//! Retention end to end, on the backend `DURESS_TEST_DATABASE` names: alarms raised over HTTPS
//! at a real receiver, one incident resolved and then aged (its `resolved_at` moved 40 days
//! back, the only way to have an old incident in a test), then `duress-receiver purge` run as
//! the real binary beside the running receiver, and `serve`'s own daily purge at start. Checks:
//! the old resolved incident is gone, the open one kept, the counts are in the one audit entry,
//! and `audit verify` passes after the purge.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::Harness;
use duress_core::{EventAck, EventKind};
use duress_receiver::config::{ReceiverConfig, RetentionConfig};
use duress_receiver::store::{IncidentAction, Store, StoreLocation};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_duress-receiver");

/// Opens a second store on the receiver's (as another process would).
async fn open(at: &StoreLocation) -> Arc<dyn Store> {
    duress_receiver::store::open(at).await.unwrap()
}

/// Raises a duress alarm from a new station; returns its incident.
async fn alarm(h: &Harness) -> Uuid {
    let mut agent = h.enrolled_agent().await;
    let claims = agent.event(EventKind::Duress);
    let answer = h.post("/v1/events", agent.sign_event(&claims)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json::<EventAck>().incident_id.unwrap()
}

/// Resolves `id` and moves its resolution `days` back: the test's stand-in for waiting.
async fn resolve_days_ago(at: &StoreLocation, id: Uuid, days: i64) {
    let store = open(at).await;
    let resolve = IncidentAction::Resolve {
        disposition: "drill".into(),
        follow_up: String::new(),
    };
    store.apply_action(id, "bob", resolve).await.unwrap();
    store.close().await;
    let then = common::now() - time::Duration::days(days);
    match &at.database {
        None => {
            let path = duress_receiver::store::sqlite::database_path(&at.data_dir);
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            let text = then
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
            // The store's own format: three fraction digits, `Z`.
            let text = format!("{}.000Z", &text[..19]);
            sqlx::query("UPDATE incidents SET resolved_at = ?1 WHERE incident_id = ?2")
                .bind(text)
                .bind(id.to_string())
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        Some(url) => {
            // duress-testpg's `postgres://USER@/DB?host=DIR` has an empty host, which sqlx's
            // URL parser refuses: give it the user separately, as the store does.
            let (user, rest) = url
                .expose()
                .strip_prefix("postgres://")
                .and_then(|u| u.split_once('@'))
                .unwrap();
            let options: sqlx::postgres::PgConnectOptions =
                format!("postgres://{rest}").parse().unwrap();
            let pool = sqlx::PgPool::connect_with(options.username(user))
                .await
                .unwrap();
            sqlx::query("UPDATE incidents SET resolved_at = $1 WHERE incident_id = $2")
                .bind(then)
                .bind(id)
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
    }
}

fn store_args(at: &StoreLocation) -> Vec<String> {
    let mut args = vec!["--data-dir".to_owned(), at.data_dir.display().to_string()];
    if let Some(url) = &at.database {
        args.extend(["--database".to_owned(), url.expose().to_owned()]);
    }
    args
}

fn run(args: &[String]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_config(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join("receiver.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_command_deletes_old_resolved_incidents_keeps_open_ones_and_the_chain_verifies() {
    let h = Harness::start().await;
    let at = h.data_dir();
    let old = alarm(&h).await;
    let recent = alarm(&h).await;
    let open_id = alarm(&h).await;
    resolve_days_ago(&at, old, 40).await;
    resolve_days_ago(&at, recent, 2).await;
    let config = write_config(
        h.dir.path(),
        "[retention]\nresolved_incidents_days = 30\ntest_events_days = 30\n\
         heartbeat_history_days = 30\nsessions_days = 0\n",
    );
    let mut args = vec!["purge".to_owned()];
    args.extend(store_args(&at));
    args.extend(["--config".to_owned(), config.clone()]);

    // A dry run says what would go, and deletes nothing.
    let mut dry = args.clone();
    dry.push("--dry-run".into());
    let (ok, stdout, stderr) = run(&dry);
    assert!(ok, "{stderr}");
    assert!(
        stdout
            .starts_with("dry run, nothing deleted; would purge: incidents 1, incident events 1,"),
        "{stdout}"
    );
    let store = open(&at).await;
    assert!(store.incident(old).await.unwrap().is_some());

    // The purge, beside the running receiver.
    let (ok, stdout, stderr) = run(&args);
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with("purged: incidents 1, incident events 1,"),
        "{stdout}"
    );
    assert!(
        store.incident(old).await.unwrap().is_none(),
        "40 days old: purged"
    );
    assert!(
        store.incident(recent).await.unwrap().is_some(),
        "2 days old: kept"
    );
    assert!(
        store
            .incident(open_id)
            .await
            .unwrap()
            .unwrap()
            .incident
            .is_open(),
        "open: kept"
    );
    let entry = store.recent_audit(1).await.unwrap().remove(0);
    assert_eq!(entry.action, "retention.purge");
    assert_eq!(entry.actor, "cli");
    assert!(
        entry.detail.starts_with("incidents 1, incident events 1,"),
        "{}",
        entry.detail
    );

    // The chain verifies after the purge, as the operator checks it.
    let mut verify = vec!["audit".to_owned(), "verify".to_owned()];
    verify.extend(store_args(&at));
    let (ok, stdout, stderr) = run(&verify);
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("audit chain ok: "), "{stdout}");

    // Alarms keep arriving after a purge.
    let after = alarm(&h).await;
    assert!(store.incident(after).await.unwrap().is_some());

    // A window shorter than the floor is refused, naming the key; so is an unknown key.
    let short = write_config(h.dir.path(), "[retention]\nresolved_incidents_days = 5\n");
    let mut bad = vec!["purge".to_owned()];
    bad.extend(store_args(&at));
    bad.extend(["--config".to_owned(), short]);
    let (ok, _, stderr) = run(&bad);
    assert!(!ok);
    assert!(stderr.contains("resolved_incidents_days = 5"), "{stderr}");
    let typo = write_config(h.dir.path(), "[retention]\nresolved_incident_days = 90\n");
    let last = bad.len() - 1;
    bad[last] = typo;
    let (ok, _, stderr) = run(&bad);
    assert!(!ok);
    assert!(stderr.contains("resolved_incident_days"), "{stderr}");
    store.close().await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_purges_at_start_once_and_audits_it() {
    // A first receiver raises and resolves an alarm, which is then aged; a second one on the
    // same store, started with `[retention]`, purges it at start.
    let h = Harness::start().await;
    let at = h.data_dir();
    let old = alarm(&h).await;
    let open_id = alarm(&h).await;
    resolve_days_ago(&at, old, 40).await;
    let dir = h.dir.path().to_owned();
    let database = at.database.clone();
    let config = ReceiverConfig {
        retention: Some(RetentionConfig {
            resolved_incidents_days: Some(30),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut settings = duress_receiver::Settings::new(&dir);
    settings.database = database;
    settings.config = Some(Arc::new(config));
    let second = duress_receiver::start(settings).await.unwrap();
    let store = open(&at).await;
    // Bounded wait: the first check runs as `serve` starts.
    let mut purged = None;
    for _ in 0..100 {
        let log = store.audit_log().await.unwrap();
        if let Some(e) = log.iter().find(|e| e.action == "retention.purge") {
            purged = Some(e.clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let entry = purged.expect("serve's purge wrote no audit entry within 10 s");
    assert_eq!(entry.actor, "system:retention");
    assert!(entry.detail.starts_with("incidents 1,"), "{}", entry.detail);
    assert!(store.incident(old).await.unwrap().is_none());
    assert!(store.incident(open_id).await.unwrap().is_some());
    duress_receiver::store::verify_audit(store.as_ref(), None)
        .await
        .unwrap()
        .unwrap();
    store.close().await;
    second.shutdown().await.unwrap();
    h.shutdown().await;
}
