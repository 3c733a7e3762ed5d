//! Response work through the receiver (issue 17): bulk resolve on the console, same-room
//! grouping of presses from the agent API with the policy on and off, and the reports page's
//! time-to-claim and time-to-resolve distributions on known fixtures. Runs on SQLite, and on
//! PostgreSQL with `DURESS_TEST_DATABASE=postgres`.
//!
//! The chart case moves the receiver clock (`duress_receiver::clock`), which is process-wide,
//! so every case of this binary runs alone (`SERIAL`) from the system clock.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::Harness;
use common::console::{Console, add_user};
use duress_core::{EventAck, EventKind, Location};
use duress_receiver::clock;
use duress_receiver::store::{NewDisplay, Role, Store};
use std::sync::Arc;
use uuid::Uuid;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Holds the lock and puts the clock back when the case ends (or fails).
struct Case(#[allow(dead_code)] tokio::sync::MutexGuard<'static, ()>);

impl Case {
    async fn begin() -> Self {
        let guard = SERIAL.lock().await;
        clock::reset();
        Case(guard)
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        clock::reset();
    }
}

fn room(bld: &str, flr: &str, room: &str) -> Location {
    Location {
        label: Some(format!("{bld}, Floor {flr}, Room {room}")),
        bld: Some(bld.into()),
        flr: Some(flr.into()),
        room: Some(room.into()),
        ..Default::default()
    }
}

/// A duress press of `agent` from `location`, occurred `ago` before now; its incident.
async fn press(
    h: &Harness,
    agent: &mut common::Agent,
    location: Option<Location>,
    ago: time::Duration,
) -> Uuid {
    let mut claims = agent.event(EventKind::Duress);
    if let Some(l) = location {
        claims.location = l;
    }
    claims.occurred_at -= ago;
    let answer = h.post("/v1/events", agent.sign_event(&claims)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json::<EventAck>().incident_id.unwrap()
}

async fn store_of(h: &Harness) -> Arc<dyn Store> {
    duress_receiver::store::open(&h.data_dir()).await.unwrap()
}

/// An officer ticks three incidents (two of one station, pre-ticked from its link, and one
/// another officer claimed) and resolves them in one request: the two are resolved, each with
/// its own `incident.resolve` audit entry, and the claimed one is skipped and named on the
/// answer page. Without the CSRF token, or from a paired duty display, nothing is resolved.
#[tokio::test]
async fn bulk_resolve_on_the_console_resolves_each_and_reports_skips() {
    let _case = Case::begin().await;
    let h = Harness::start().await;
    add_user(h.data_dir(), "alice", Role::Officer).await;
    add_user(h.data_dir(), "bob", Role::Officer).await;
    let mut one = h.enrolled_agent().await;
    let mut two = h.enrolled_agent().await;
    let old = press(&h, &mut one, None, time::Duration::minutes(30)).await;
    let new = press(&h, &mut one, None, time::Duration::ZERO).await;
    assert_ne!(old, new, "30 min apart: two incidents of one station");
    let bobs = press(&h, &mut two, None, time::Duration::ZERO).await;
    let alice = Console::sign_in(&h, "alice").await;
    let bob = Console::sign_in(&h, "bob").await;
    let claimed = bob
        .post_form(&format!("/incidents/{bobs}/claim"), &[])
        .await;
    assert_eq!(claimed.status, 303, "{}", claimed.text());

    let page = alice
        .get(&format!(
            "/incidents/resolve-several?device={}",
            one.device_id
        ))
        .await;
    assert_eq!(page.status, 200, "{}", page.text());
    let html = page.text();
    for id in [old, new] {
        assert!(
            html.contains(&format!(
                "value=\"{id}\" id=\"pick-{id}\" aria-label=\"Resolve"
            )),
            "a checkbox for {id}"
        );
        let row = html.split(&format!("id=\"pick-{id}\"")).nth(1).unwrap();
        assert!(
            row[..row.find('>').unwrap()].contains("checked"),
            "the station's incidents are pre-ticked"
        );
    }
    let bobs_row = html.split(&format!("id=\"pick-{bobs}\"")).nth(1).unwrap();
    assert!(!bobs_row[..bobs_row.find('>').unwrap()].contains("checked"));
    assert!(html.contains("(will be skipped)"));

    let store = store_of(&h).await;
    let audit_before = store.audit_log().await.unwrap().len();
    let fields = [
        ("incident", old.to_string()),
        ("incident", new.to_string()),
        ("incident", bobs.to_string()),
        ("disposition", "accidental".to_owned()),
        ("follow_up", "keyboard stuck, checked on site".to_owned()),
    ];
    let refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();

    // No CSRF token: refused, nothing resolved.
    let forged = alice
        .post_raw("/incidents/resolve-several", &common::console::form(&refs))
        .await;
    assert_eq!(forged.status, 403, "{}", forged.text());
    assert_eq!(store.audit_log().await.unwrap().len(), audit_before);

    // A paired duty display: refused, nothing resolved.
    let token = "display-token-for-the-wall-screen";
    let t = clock::receiver_now();
    assert!(
        store
            .create_pending_display(
                NewDisplay {
                    token_hash: duress_receiver::console::sessions::hash_id(token),
                    code_hash: duress_receiver::console::sessions::hash_id("CODE1234"),
                    created_at: t,
                    code_expires_at: t + time::Duration::minutes(10),
                },
                10,
            )
            .await
            .unwrap()
    );
    store
        .pair_display(
            &duress_receiver::console::sessions::hash_id("CODE1234"),
            "wall",
            "admin",
            t,
        )
        .await
        .unwrap()
        .unwrap();
    let mut display = Console::anonymous(&h);
    display.cookie = Some(format!(
        "{}={token}",
        duress_receiver::console::displays::COOKIE_NAME
    ));
    assert_eq!(
        display.get("/").await.status,
        200,
        "the display views the board"
    );
    assert_eq!(
        display.get("/incidents/resolve-several").await.status,
        403,
        "but not the bulk page"
    );
    let by_display = display
        .post_raw("/incidents/resolve-several", &common::console::form(&refs))
        .await;
    assert_eq!(by_display.status, 403);
    let audit_now = store.audit_log().await.unwrap();
    assert!(
        audit_now[audit_before..]
            .iter()
            .all(|e| e.action != "incident.resolve"),
        "nothing resolved by the display"
    );
    let audit_before = audit_now.len();

    let done = alice.post_form("/incidents/resolve-several", &refs).await;
    assert_eq!(done.status, 200, "{}", done.text());
    let html = done.text();
    assert!(
        html.contains("<span class=\"bulk-resolved-count\">2</span> resolved"),
        "{html}"
    );
    assert!(html.contains("<span class=\"bulk-skipped-count\">1</span> skipped"));
    assert!(html.contains(&format!(
        "class=\"bulk-outcome bulk-claimed\" data-incident-id=\"{bobs}\""
    )));
    assert!(html.contains("bob is handling it"));

    let incidents = duress_receiver::admin::list_incidents(h.data_dir())
        .await
        .unwrap();
    let status = |id: Uuid| {
        incidents
            .iter()
            .find(|i| i.incident_id == id)
            .map(|i| {
                (
                    i.status.clone(),
                    i.resolved_by.clone(),
                    i.disposition.clone(),
                )
            })
            .unwrap()
    };
    for id in [old, new] {
        assert_eq!(
            status(id),
            (
                "closed".to_owned(),
                Some("alice".to_owned()),
                Some("accidental".to_owned())
            )
        );
    }
    assert_eq!(status(bobs).0, "open");
    let resolves: Vec<String> = store.audit_log().await.unwrap()[audit_before..]
        .iter()
        .filter(|e| e.action == "incident.resolve" && e.actor == "alice")
        .map(|e| e.subject.clone())
        .collect();
    assert_eq!(resolves, [old.to_string(), new.to_string()]);

    // Nothing ticked, a bad disposition, or junk: refused with the console's error page.
    let bobs_text = bobs.to_string();
    for bad in [
        vec![("disposition", "accidental")],
        vec![("incident", "not-an-id"), ("disposition", "accidental")],
        vec![
            ("incident", bobs_text.as_str()),
            ("disposition", "whatever"),
        ],
    ] {
        let refused = alice.post_form("/incidents/resolve-several", &bad).await;
        assert_eq!(refused.status, 422, "{bad:?}: {}", refused.text());
    }
    assert_eq!(
        duress_receiver::admin::list_incidents(h.data_dir())
            .await
            .unwrap()
            .iter()
            .find(|i| i.incident_id == bobs)
            .unwrap()
            .status,
        "open"
    );
    store.close().await;
    h.shutdown().await;
}

/// `[incidents] group_same_room` on: two stations of one room pressing at once, over the
/// agent API, give one incident whose page lists both stations, and once it is claimed both
/// stations' heartbeats acknowledge it covertly; a station in the next room gets its own. Off (the default): two stations of one room, two incidents.
#[tokio::test]
async fn same_room_grouping_through_the_api_follows_the_policy() {
    let _case = Case::begin().await;
    let on = Harness::start_with(|s| s.group_same_room = true).await;
    add_user(on.data_dir(), "alice", Role::Officer).await;
    let mut a = on.enrolled_agent().await;
    let mut b = on.enrolled_agent().await;
    let mut c = on.enrolled_agent().await;
    let (ia, ib) = tokio::join!(
        press(
            &on,
            &mut a,
            Some(room("Bldg A", "2", "214")),
            time::Duration::ZERO
        ),
        press(
            &on,
            &mut b,
            Some(room("Bldg A", "2", "214")),
            time::Duration::ZERO
        ),
    );
    assert_eq!(ia, ib, "one room, one incident");
    let ic = press(
        &on,
        &mut c,
        Some(room("Bldg A", "2", "215")),
        time::Duration::ZERO,
    )
    .await;
    assert_ne!(ic, ia, "the next room is another incident");
    let officer = Console::sign_in(&on, "alice").await;
    let page = officer.get(&format!("/incidents/{ia}")).await;
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(
        html.contains("Pressed at 2 stations in this room"),
        "{html}"
    );
    assert!(html.contains(&a.device_id) && html.contains(&b.device_id));
    let board = officer.get("/").await.text();
    assert!(board.contains("from 2 stations"));
    // Claimed: both pressing stations' heartbeats carry the covert acknowledgement, whichever
    // of them opened the incident; the next room's station's do not.
    let claimed = async |agent: &common::Agent| {
        let answer: duress_core::HeartbeatAnswer = on
            .post("/v1/heartbeats", agent.sign_heartbeat(&agent.heartbeat()))
            .await
            .json();
        answer.claimed_incidents
    };
    assert!(claimed(&b).await.is_empty(), "not claimed yet");
    assert_eq!(
        officer
            .post_form(&format!("/incidents/{ia}/claim"), &[])
            .await
            .status,
        303
    );
    assert_eq!(claimed(&a).await, [ia]);
    assert_eq!(claimed(&b).await, [ia]);
    assert!(claimed(&c).await.is_empty());
    on.shutdown().await;

    let off = Harness::start().await;
    let mut a = off.enrolled_agent().await;
    let mut b = off.enrolled_agent().await;
    let (ia, ib) = tokio::join!(
        press(
            &off,
            &mut a,
            Some(room("Bldg A", "2", "214")),
            time::Duration::ZERO
        ),
        press(
            &off,
            &mut b,
            Some(room("Bldg A", "2", "214")),
            time::Duration::ZERO
        ),
    );
    assert_ne!(ia, ib, "grouping is off by default");
    off.shutdown().await;
}

/// The figures and bars of the reports page on known fixtures: three incidents claimed 20 s,
/// 45 s and 200 s after their alarm, two of them resolved 100 s and 40 min after it; p50 and
/// p90 are nearest-rank, and the table carries the same numbers as the chart.
#[tokio::test]
async fn the_reports_page_shows_the_response_time_distributions() {
    let _case = Case::begin().await;
    let h = Harness::start().await;
    add_user(h.data_dir(), "alice", Role::Officer).await;
    let officer = Console::sign_in(&h, "alice").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut agent = h.enrolled_agent().await;
        ids.push(press(&h, &mut agent, None, time::Duration::ZERO).await);
    }
    let act = |path: String, fields: Vec<(&'static str, &'static str)>| {
        let officer = &officer;
        async move {
            let a = officer.post_form(&path, &fields).await;
            assert_eq!(a.status, 303, "{path}: {}", a.text());
        }
    };
    // The incidents were opened within a second or so of each other; the clock then moves in
    // whole steps far larger than that, so each time falls well inside its bucket.
    clock::advance(Duration::from_secs(20));
    act(format!("/incidents/{}/claim", ids[0]), vec![]).await;
    clock::advance(Duration::from_secs(25)); // 45 s
    act(format!("/incidents/{}/claim", ids[1]), vec![]).await;
    clock::advance(Duration::from_secs(55)); // 100 s
    act(
        format!("/incidents/{}/resolve", ids[0]),
        vec![("disposition", "test")],
    )
    .await;
    clock::advance(Duration::from_secs(100)); // 200 s
    act(format!("/incidents/{}/claim", ids[2]), vec![]).await;
    clock::advance(Duration::from_secs(2200)); // 2400 s = 40 min
    act(
        format!("/incidents/{}/resolve", ids[1]),
        vec![("disposition", "accidental")],
    )
    .await;

    let page = officer.get("/reports").await;
    assert_eq!(page.status, 200);
    let html = page.text();
    let figure = |key: &str| -> String {
        let start = html
            .find(&format!(
                "<figure class=\"distribution\" id=\"distribution-{key}\""
            ))
            .unwrap_or_else(|| panic!("no {key} distribution"));
        let end = html[start..].find("</figure>").unwrap() + start;
        html[start..end].to_owned()
    };
    let claim = figure("claim");
    let text_between = |s: &str, class: &str| -> String {
        let at = s.find(&format!("class=\"{class}\">")).unwrap() + class.len() + 9;
        s[at..at + s[at..].find('<').unwrap()].to_owned()
    };
    assert!(
        claim.contains("<strong>Time to claim</strong>, 3 incident(s)"),
        "{claim}"
    );
    // Claims 20, 45, 200 s: p50 is the 2nd (45 s), p90 the 3rd (200 s).
    assert!(text_between(&claim, "p50").starts_with("4"), "{claim}");
    assert_eq!(text_between(&claim, "p90"), text_between(&claim, "max"));
    // 200 s after the clock moved, less the moment between the presses: "3 min 19/20 s".
    assert!(text_between(&claim, "max").starts_with("3 min "), "{claim}");
    let counts = |s: &str| -> Vec<String> {
        s.split("<td class=\"bucket-count\">")
            .skip(1)
            .map(|c| c[..c.find('<').unwrap()].to_owned())
            .collect()
    };
    assert_eq!(
        counts(&claim),
        ["1", "1", "0", "1", "0", "0", "0", "0", "0", "0"],
        "< 30 s, 30–60 s, …, 2–5 min: {claim}"
    );
    assert_eq!(claim.matches("class=\"bar\"").count(), 10);
    assert!(claim.contains("data-count=\"1\""));
    let resolve = figure("resolve");
    assert!(
        resolve.contains("<strong>Time to resolve</strong>, 2 incident(s)"),
        "{resolve}"
    );
    assert_eq!(
        counts(&resolve),
        ["0", "0", "1", "0", "0", "0", "1", "0", "0", "0"],
        "1–2 min and 30–60 min: {resolve}"
    );
    assert!(
        text_between(&resolve, "p50").starts_with("1 min 4"),
        "{resolve}"
    );
    let max = text_between(&resolve, "max");
    assert!(
        max.starts_with("40 min") || max.starts_with("39 min 5"),
        "{resolve}"
    );
    assert!(resolve.contains("Time to resolve (from the alarm)"));

    let print = officer.get("/reports/print").await;
    assert_eq!(print.status, 200);
    assert!(print.text().contains("id=\"distribution-claim\""));
    let store = store_of(&h).await;
    assert!(
        store
            .audit_log()
            .await
            .unwrap()
            .iter()
            .any(|e| e.action == "report.print" && e.subject == "reports" && e.actor == "alice")
    );
    store.close().await;
    h.shutdown().await;
}
