//! Real key presses through the real X11 grab for every trigger mode: the tray app under a
//! private Xvfb, keys sent with xdotool (XTest), alarms checked at the real receiver
//! (issue 18, item 4). Each press is a real key-down/key-up pair, as a keyboard or a USB pedal
//! sends it.

#[path = "../tray/harness.rs"]
mod harness;

use std::time::Duration;

use harness::{Tray, World, ensure_sni_watcher};

/// Waits long enough for an alarm that was not raised to have shown up if it had been (the
/// tray records and delivers within a second).
const NOTHING_RAISED_WAIT: Duration = Duration::from_millis(2500);

fn ready(w: &World) -> Tray {
    let tray = w.spawn_tray("tray", &[]);
    tray.wait_menu(Duration::from_secs(20), "Duress: on", |m| {
        Tray::status_line(m) == "Duress: on"
    });
    tray
}

/// `hold_ms = 1000`: `keydown`, 300 ms, `keyup` raises nothing; `keydown`, 1.5 s, `keyup`
/// raises one alarm — fired by the held chord (auto-repeat of the held keys is no release).
#[test]
fn hold_mode_fires_only_after_the_hold_time() {
    ensure_sni_watcher();
    let w = World::new("[hotkey]\nchords = [\"Ctrl+Alt+Shift+D\"]\nhold_ms = 1000\n");
    let tray = ready(&w);
    w.xvfb.xdotool(&["keydown", "ctrl+alt+shift+d"]);
    std::thread::sleep(Duration::from_millis(300));
    w.xvfb.xdotool(&["keyup", "ctrl+alt+shift+d"]);
    std::thread::sleep(NOTHING_RAISED_WAIT);
    assert!(
        w.incidents().is_empty(),
        "a 300 ms tap must not fire a 1 s hold; log:\n{}",
        tray.log_text()
    );

    w.xvfb.xdotool(&["keydown", "ctrl+alt+shift+d"]);
    std::thread::sleep(Duration::from_millis(1500));
    w.xvfb.xdotool(&["keyup", "ctrl+alt+shift+d"]);
    assert!(
        w.wait_incident("hotkey", Duration::from_secs(5)).is_some(),
        "a 1.5 s hold fires; log:\n{}",
        tray.log_text()
    );
    let incidents = w.incidents();
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0]["press_count"], 1, "one hold, one press");
}

/// `repeat = 3` within 1.5 s: two presses raise nothing (and expire with the window); three
/// presses in quick succession raise one alarm.
#[test]
fn repeat_mode_fires_on_the_nth_press_within_the_window() {
    ensure_sni_watcher();
    let w = World::new("[hotkey]\nchords = [\"Ctrl+Alt+Shift+D\"]\nrepeat = 3\nwindow_ms = 1500\n");
    let tray = ready(&w);
    w.xvfb.key("ctrl+alt+shift+d");
    w.xvfb.key("ctrl+alt+shift+d");
    std::thread::sleep(NOTHING_RAISED_WAIT);
    assert!(
        w.incidents().is_empty(),
        "two presses of three raise nothing; log:\n{}",
        tray.log_text()
    );
    // The two presses above are outside the window now: three more are needed.
    w.xvfb.key("ctrl+alt+shift+d");
    w.xvfb.key("ctrl+alt+shift+d");
    std::thread::sleep(NOTHING_RAISED_WAIT);
    assert!(
        w.incidents().is_empty(),
        "expired presses do not count; log:\n{}",
        tray.log_text()
    );
    for _ in 0..3 {
        w.xvfb.key("ctrl+alt+shift+d");
    }
    assert!(
        w.wait_incident("hotkey", Duration::from_secs(5)).is_some(),
        "three presses within the window fire; log:\n{}",
        tray.log_text()
    );
    assert_eq!(w.incidents()[0]["press_count"], 1);
}

/// The optional cancel chord (`[cancel] chords`) is grabbed next to the alarm chord: after an
/// alarm, pressing it stores a `cancel` event that annotates the incident and leaves it open.
#[test]
fn the_cancel_chord_annotates_the_open_incident() {
    ensure_sni_watcher();
    let w = World::new("[cancel]\nchords = [\"Ctrl+Alt+Shift+O\"]\n");
    let tray = ready(&w);
    w.xvfb.key("ctrl+alt+shift+o");
    assert!(
        duress_tests::wait_until(Duration::from_secs(5), || !w
            .events_of_kind("cancel")
            .is_empty()),
        "the cancel chord stores a cancel; log:\n{}",
        tray.log_text()
    );
    assert!(w.incidents().is_empty(), "a lone cancel opens no incident");
    w.xvfb.key("ctrl+alt+shift+d");
    assert!(w.wait_incident("hotkey", Duration::from_secs(5)).is_some());
    w.xvfb.key("ctrl+alt+shift+o");
    let annotated = duress_tests::wait_until(Duration::from_secs(5), || {
        w.incidents()
            .first()
            .is_some_and(|i| !i["cancelled_at"].is_null())
    });
    assert!(annotated, "{:#?}", w.incidents());
    let i = &w.incidents()[0];
    assert_eq!(i["status"], "open", "a cancel never closes");
    assert_eq!(i["press_count"], 1, "a cancel is not a press");
}
