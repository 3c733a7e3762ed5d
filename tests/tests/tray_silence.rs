//! The tray app's chord, end to end: the real `duress-agent` (no subcommand) under a private
//! Xvfb, the real receiver, the real Secret Service; the chord sent with `xdotool`.

#[path = "../tray/harness.rs"]
mod harness;

use std::process::Stdio;
use std::time::{Duration, Instant};

use harness::{World, secs};

/// `xdotool key ctrl+alt+shift+d` → an incident with `source: hotkey` within 2 s, and a
/// full-screen screenshot taken before the press and one taken after it are pixel-identical
/// (the silence proof: no window, no notification, nothing drawn).
#[test]
fn chord_raises_a_hotkey_incident_within_2s_and_the_screen_does_not_change() {
    let w = World::new("");
    let mut tray = w.spawn_tray("tray", &[]);
    assert!(
        tray.log_text().contains("hotkey registered"),
        "chord not registered:\n{}",
        tray.log_text()
    );
    // Let start-up settle (first heartbeat, tray export) before the "before" picture.
    std::thread::sleep(Duration::from_secs(1));
    let before = w.xvfb.screenshot_root();
    let windows_before = w.xvfb.visible_windows(".");

    let pressed = Instant::now();
    w.xvfb.key("ctrl+alt+shift+d");
    let incident = w.wait_incident("hotkey", Duration::from_secs(2));
    let took = secs(pressed);
    assert!(
        incident.is_some(),
        "no hotkey incident within 2 s (waited {took:.2} s); agent log:\n{}",
        tray.log_text()
    );
    let incident = incident.unwrap_or_default();
    assert_eq!(incident["location"]["label"], harness::LABEL);
    assert_eq!(incident["press_count"], 1);

    // Anything the agent might show would be up by now.
    std::thread::sleep(Duration::from_millis(1500));
    let after = w.xvfb.screenshot_root();
    assert_eq!((before.width, before.height), (1024, 768));
    assert!(before == after, "the screen changed after the press");
    assert_eq!(
        w.xvfb.visible_windows("."),
        windows_before,
        "a window appeared"
    );
    assert!(tray.is_running(), "the agent must keep running");
    eprintln!("chord → incident in {took:.2} s; screen identical");
}

/// The alarm path does not go through the UI thread: with the UI thread blocked (test hook
/// `DURESS_AGENT_TEST_BLOCK_UI_MS`), a chord still becomes an incident within 2 s.
#[test]
fn chord_is_delivered_while_the_ui_thread_is_blocked() {
    let w = World::new("");
    let blocked_for = Duration::from_secs(20);
    let tray = w.spawn_tray(
        "tray",
        &[(
            duress_agent_env::BLOCK_UI_MS,
            &blocked_for.as_millis().to_string(),
        )],
    );
    tray.wait_log("test hook: blocking the UI thread", Duration::from_secs(5));
    let blocked_at = Instant::now();
    // The hook runs as the event loop's first task: make sure it has started.
    std::thread::sleep(Duration::from_millis(1500));
    w.xvfb.key("ctrl+alt+shift+d");
    let incident = w.wait_incident("hotkey", Duration::from_secs(2));
    assert!(
        incident.is_some(),
        "no hotkey incident within 2 s while the UI thread was blocked; log:\n{}",
        tray.log_text()
    );
    assert!(
        blocked_at.elapsed() < blocked_for,
        "the UI thread was still blocked when the incident arrived"
    );
}

/// A second start (same state dir) exits 0 quietly, and the first keeps its chord.
#[test]
fn second_instance_exits_0_and_the_first_keeps_its_chord() {
    let w = World::new("");
    let mut first = w.spawn_tray("first", &[]);
    assert!(first.log_text().contains("hotkey registered"));

    let second_log = w.tmp.path().join("second.log");
    let started = Instant::now();
    let status = w
        .tray_command(&second_log)
        .stdout(Stdio::null())
        .status()
        .expect("run a second tray app");
    assert!(status.success(), "second instance exit status {status}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the second instance should exit at once"
    );
    let second = std::fs::read_to_string(&second_log).unwrap_or_default();
    assert!(
        second.contains("already runs"),
        "second instance log:\n{second}"
    );

    assert!(first.is_running());
    w.xvfb.key("ctrl+alt+shift+d");
    assert!(
        w.wait_incident("hotkey", Duration::from_secs(2)).is_some(),
        "the first instance lost its chord; log:\n{}",
        first.log_text()
    );
}

/// The test hook's variable name, as the agent defines it.
mod duress_agent_env {
    pub const BLOCK_UI_MS: &str = "DURESS_AGENT_TEST_BLOCK_UI_MS";
}

/// The optional hotspot (`[tray] hotspot = "bottom-right"`): a double-click in that screen
/// corner raises an incident with `source: hotspot`, and the screen stays pixel-identical.
#[test]
fn hotspot_double_click_raises_a_hotspot_incident_silently() {
    let w = World::new("[tray]\nhotspot = \"bottom-right\"\n");
    let tray = w.spawn_tray("tray", &[]);
    // Wait for the (invisible) hotspot page to be loaded: the screen stops changing.
    let mut before = w.xvfb.screenshot_root();
    let settled = duress_tests::wait_until(Duration::from_secs(20), || {
        std::thread::sleep(Duration::from_millis(1000));
        let next = w.xvfb.screenshot_root();
        let same = next == before;
        before = next;
        same && tray.log_text().contains("tray ready")
    });
    assert!(settled, "the screen never settled");
    std::thread::sleep(Duration::from_secs(2));
    let before = w.xvfb.screenshot_root();

    // 1024x768 screen, a 12 px hotspot in the bottom-right corner.
    w.xvfb.xdotool(&["mousemove", "1018", "762"]);
    let mut incident = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while incident.is_none() && Instant::now() < deadline {
        w.xvfb
            .xdotool(&["click", "--repeat", "2", "--delay", "60", "1"]);
        incident = w.wait_incident("hotspot", Duration::from_secs(2));
    }
    assert!(
        incident.is_some(),
        "no hotspot incident; log:\n{}",
        tray.log_text()
    );
    // (xwd images never contain the pointer.)
    std::thread::sleep(Duration::from_millis(1500));
    let after = w.xvfb.screenshot_root();
    assert!(before == after, "the screen changed after the double-click");
}
