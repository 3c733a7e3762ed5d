//! The tray menu, read and clicked over D-Bus (com.canonical.dbusmenu) through a
//! StatusNotifierWatcher stub, against the real tray app under a private Xvfb; and screenshots
//! of the on-demand windows.

#[path = "../tray/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::{LABEL, MenuEntry, Tray, World, artifacts_dir, ensure_sni_watcher, secs};

const POLICY_EXTRA: &str = r#"
[tray]
hidden_button_label = "Request assistance"
allow_user_location = true

[help]
security_phone = "651-793-1717"
security_email = "security@metrostate.edu"
teams_url = "https://teams.microsoft.com/l/channel/security-collaboration"
"#;

/// Everything but the "last contact" line, which moves with heartbeats (every 10 s here).
fn without_heartbeat_time(menu: &[MenuEntry]) -> Vec<MenuEntry> {
    menu.iter()
        .filter(|e| !e.label.starts_with("Last contact with Security:"))
        .cloned()
        .collect()
}

/// The status line shows `Duress: on` and the location; clicking the hidden item raises an
/// incident with `source: tray` and changes no menu text; "Send a test alert" stores a test
/// event and the menu then shows the time of the last self-test.
#[test]
fn tray_menu_shows_status_and_location_and_its_items_raise_alarms() {
    ensure_sni_watcher();
    let w = World::new(POLICY_EXTRA);
    let tray = w.spawn_tray("tray", &[]);
    let menu = tray.wait_menu(Duration::from_secs(20), "Duress: on", |m| {
        Tray::status_line(m) == "Duress: on"
    });
    let labels: Vec<&str> = menu.iter().map(|e| e.label.as_str()).collect();
    assert!(
        labels.contains(&format!("Location: {LABEL}").as_str()),
        "{labels:#?}"
    );
    assert!(labels.contains(&"Change location…"), "{labels:#?}");
    assert!(labels.contains(&"Chord: Ctrl+Alt+Shift+D"), "{labels:#?}");
    assert!(labels.contains(&"Request assistance"), "{labels:#?}");
    assert!(labels.contains(&"Send a test alert"), "{labels:#?}");
    assert!(
        labels.contains(&"Help and other ways to get help"),
        "{labels:#?}"
    );
    assert!(
        labels.iter().any(|l| l.starts_with("About Duress ")),
        "{labels:#?}"
    );
    assert!(labels.contains(&"Last self-test: never"), "{labels:#?}");
    assert!(!labels.contains(&"Quit"), "Quit only when policy allows it");
    assert!(
        !menu[0].enabled,
        "the status line is information, not an action"
    );

    // The hidden button: an incident from the tray, and the menu stays as it was.
    let clicked = Instant::now();
    tray.click("Request assistance");
    let incident = w.wait_incident("tray", Duration::from_secs(2));
    assert!(
        incident.is_some(),
        "no tray incident within 2 s of the click ({:.2} s); log:\n{}",
        secs(clicked),
        tray.log_text()
    );
    std::thread::sleep(Duration::from_millis(3500)); // > 2 menu refreshes
    let after = tray.menu().expect("menu still exported");
    assert_eq!(
        without_heartbeat_time(&after),
        without_heartbeat_time(&menu),
        "a press must not change the menu"
    );

    // The self-test travels the whole path and its confirmation shows in the menu.
    tray.click("Send a test alert");
    let ok = duress_tests::wait_until(Duration::from_secs(5), || {
        !w.events_of_kind("test").is_empty()
    });
    assert!(ok, "no test event stored; log:\n{}", tray.log_text());
    let menu = tray.wait_menu(Duration::from_secs(5), "the last self-test time", |m| {
        m.iter()
            .any(|e| e.label.starts_with("Last self-test: ") && e.label != "Last self-test: never")
    });
    assert_eq!(Tray::status_line(&menu), "Duress: on");
    assert_eq!(w.incidents().len(), 1, "a test opens no incident");
}

/// Opens Help and Status (About) from the menu and writes PNG screenshots of both windows to
/// `artifacts/tray/` (the README shows copies from `docs/screenshots/`). The pictures must
/// show rendered pages, not blank windows.
#[test]
fn help_status_and_location_windows_are_screenshotted() {
    ensure_sni_watcher();
    let w = World::new(POLICY_EXTRA);
    let tray = w.spawn_tray("tray", &[]);
    tray.wait_menu(Duration::from_secs(20), "Duress: on", |m| {
        Tray::status_line(m) == "Duress: on"
    });
    assert!(
        w.xvfb.visible_windows("Duress").is_empty(),
        "no window before it is asked for"
    );

    for (item, title, file) in [
        (
            "Help and other ways to get help",
            "Duress — help",
            "tray-help.png",
        ),
        ("About Duress", "Duress — status", "tray-status.png"),
        (
            "Change location…",
            "Duress — change location",
            "tray-location.png",
        ),
    ] {
        tray.click(item);
        let mut ids = Vec::new();
        let shown = duress_tests::wait_until(Duration::from_secs(30), || {
            ids = w.xvfb.visible_windows(title);
            !ids.is_empty()
        });
        assert!(
            shown,
            "the {title:?} window did not appear; log:\n{}",
            tray.log_text()
        );
        // Let WebKit render (software, under Xvfb) and the page fill in its data.
        let mut shot = w.xvfb.screenshot_window(&ids[0]);
        duress_tests::wait_until(Duration::from_secs(20), || {
            std::thread::sleep(Duration::from_millis(700));
            let next = w.xvfb.screenshot_window(&ids[0]);
            let settled = next == shot && next.distinct_colours() > 16;
            shot = next;
            settled
        });
        assert!(
            shot.distinct_colours() > 16,
            "the {title:?} window looks blank ({} colours)",
            shot.distinct_colours()
        );
        let path = artifacts_dir().join(file);
        shot.write_png(&path);
        eprintln!("wrote {} ({}x{})", path.display(), shot.width, shot.height);
    }
}
