//! F13–F24 chords as a USB pedal or panic button sends them, through the agent's own X11 grab
//! (issue 18, item 4): the tray app under a private Xvfb with the evdev keymap, where the key a
//! pedal sends as F13 is X keycode 191 (`<FK13>`, keysym XF86Tools) and F19 is keycode 197 with
//! no keysym at all. Keys are sent by keycode through XTest (`tests/tray/press_keycode.py`), as
//! the pedal's kernel driver sends them, or by a keysym only that keycode carries (`xdotool key
//! shift+XF86AudioMicMute` is keycode 198, F20). Not `xdotool key XF86Tools`: keycode 179
//! (`KEY_TOOLS`) carries XF86Tools too and xdotool picks that one, not the pedal's 191. Alarms
//! are checked at the real receiver, the registration in the tray menu and the heartbeat.

#[path = "../tray/harness.rs"]
mod harness;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::{Tray, World, ensure_sni_watcher, python, script};

/// Waits long enough for an alarm that was not raised to have shown up if it had been (the
/// tray records and delivers within a second).
const NOTHING_RAISED_WAIT: Duration = Duration::from_millis(2500);

/// Presses X keycode `keycode` through XTest for `hold_ms`, with Shift held if `shift`.
fn press_keycode(w: &World, keycode: u8, hold_ms: u32, shift: bool) {
    let mut cmd = Command::new(python());
    cmd.arg(script("press_keycode.py"))
        .args(["--hold", &hold_ms.to_string()])
        .env("DISPLAY", &w.xvfb.display);
    if shift {
        cmd.arg("--shift");
    }
    let out = cmd
        .arg(keycode.to_string())
        .output()
        .expect("run press_keycode.py");
    assert!(
        out.status.success(),
        "press_keycode.py {keycode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the tray and waits until its menu says the chord is registered: the status line
/// `Duress: on` and the chord line `chord_line`; then until the heartbeat reports `chord`.
fn ready(w: &World, chord: &str, chord_line: &str) -> Tray {
    let tray = w.spawn_tray("tray", &[]);
    let menu = tray.wait_menu(Duration::from_secs(20), "Duress: on", |m| {
        Tray::status_line(m) == "Duress: on" && m.iter().any(|e| e.label == chord_line)
    });
    assert_eq!(Tray::status_line(&menu), "Duress: on", "{menu:#?}");
    let reported = duress_tests::wait_until(Duration::from_secs(20), || {
        let d = w.device();
        d["hotkey"]["state"] == "registered" && d["hotkey"]["chords"] == serde_json::json!([chord])
    });
    assert!(
        reported,
        "the heartbeat does not report {chord} registered: {:#}\nlog:\n{}",
        w.device(),
        tray.log_text()
    );
    tray
}

/// `chords = ["F13"]`: the pedal's key (keycode 191) raises an alarm; a second press is the
/// same incident's second press.
#[test]
fn an_f13_pedal_raises_an_alarm() {
    ensure_sni_watcher();
    let w = World::new("[hotkey]\nchords = [\"F13\"]\n");
    let tray = ready(&w, "F13", "Chord: F13");
    press_keycode(&w, 191, 30, false);
    assert!(
        w.wait_incident("hotkey", Duration::from_secs(5)).is_some(),
        "keycode 191 (F13 from a pedal) raises an alarm; log:\n{}",
        tray.log_text()
    );
    press_keycode(&w, 191, 30, false);
    let second = duress_tests::wait_until(Duration::from_secs(5), || {
        w.incidents().first().is_some_and(|i| i["press_count"] == 2)
    });
    assert!(second, "{:#?}", w.incidents());
    assert_eq!(w.incidents().len(), 1);
}

/// `chords = ["Shift+F20"]` (keycode 198, XF86AudioMicMute under evdev): F20 alone raises
/// nothing; Shift+F20 raises an alarm.
#[test]
fn a_pedal_chord_with_a_modifier_needs_the_modifier() {
    ensure_sni_watcher();
    let w = World::new("[hotkey]\nchords = [\"Shift+F20\"]\n");
    let tray = ready(&w, "Shift+F20", "Chord: Shift+F20");
    press_keycode(&w, 198, 30, false);
    std::thread::sleep(NOTHING_RAISED_WAIT);
    assert!(
        w.incidents().is_empty(),
        "F20 without Shift must not fire Shift+F20; log:\n{}",
        tray.log_text()
    );
    w.xvfb.key("shift+XF86AudioMicMute");
    assert!(
        w.wait_incident("hotkey", Duration::from_secs(5)).is_some(),
        "Shift+F20 raises an alarm; log:\n{}",
        tray.log_text()
    );
}

/// Hold mode on a pedal (`hold_ms = 1000`), on F19 — keycode 197, which carries no keysym at
/// all in the evdev map: a 300 ms press raises nothing, a 1.5 s press one alarm (the held key's
/// auto-repeat is no release).
#[test]
fn a_held_pedal_fires_only_after_the_hold_time() {
    ensure_sni_watcher();
    let w = World::new("[hotkey]\nchords = [\"F19\"]\nhold_ms = 1000\n");
    let tray = ready(&w, "F19", "Chord: F19 (hold 1 s)");
    press_keycode(&w, 197, 300, false);
    std::thread::sleep(NOTHING_RAISED_WAIT);
    assert!(
        w.incidents().is_empty(),
        "a 300 ms press must not fire a 1 s hold; log:\n{}",
        tray.log_text()
    );
    press_keycode(&w, 197, 1500, false);
    assert!(
        w.wait_incident("hotkey", Duration::from_secs(5)).is_some(),
        "a 1.5 s hold fires; log:\n{}",
        tray.log_text()
    );
    let incidents = w.incidents();
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0]["press_count"], 1, "one hold, one press");
}

/// A pedal chord next to an ordinary chord, and a pedal as the cancel chord: global-hotkey
/// grabs `Ctrl+Alt+Shift+D`, the agent's own grab F13 and F14; the menu and the heartbeat list
/// both alarm chords, F14 (keycode 192) stores a cancel, F13 and the keyboard chord are presses
/// of one incident.
#[test]
fn pedal_and_keyboard_chords_together_and_a_pedal_cancel() {
    ensure_sni_watcher();
    let w = World::new(
        "[hotkey]\nchords = [\"Ctrl+Alt+Shift+D\", \"F13\"]\n[cancel]\nchords = [\"F14\"]\n",
    );
    let tray = w.spawn_tray("tray", &[]);
    let menu = tray.wait_menu(Duration::from_secs(20), "both chords", |m| {
        Tray::status_line(m) == "Duress: on"
            && m.iter()
                .any(|e| e.label == "Chord: Ctrl+Alt+Shift+D or F13")
    });
    assert_eq!(Tray::status_line(&menu), "Duress: on");
    let reported = duress_tests::wait_until(Duration::from_secs(20), || {
        w.device()["hotkey"]["chords"] == serde_json::json!(["Ctrl+Alt+Shift+D", "F13"])
    });
    assert!(reported, "{:#}", w.device());

    press_keycode(&w, 192, 30, false);
    assert!(
        duress_tests::wait_until(Duration::from_secs(5), || !w
            .events_of_kind("cancel")
            .is_empty()),
        "the F14 pedal stores a cancel; log:\n{}",
        tray.log_text()
    );
    assert!(w.incidents().is_empty(), "a lone cancel opens no incident");
    press_keycode(&w, 191, 30, false);
    assert!(
        w.wait_incident("hotkey", Duration::from_secs(5)).is_some(),
        "F13 raises an alarm; log:\n{}",
        tray.log_text()
    );
    w.xvfb.key("ctrl+alt+shift+d");
    let second = duress_tests::wait_until(Duration::from_secs(5), || {
        w.incidents().first().is_some_and(|i| i["press_count"] == 2)
    });
    assert!(second, "{:#?}", w.incidents());
}

/// Another X client holds the pedal's key (keycode 191): the status line and the heartbeat say
/// F13 is taken, as for any chord, and `duress-agent trigger` still works.
#[test]
fn a_pedal_key_taken_by_another_client_is_reported() {
    ensure_sni_watcher();
    let w = World::new("[hotkey]\nchords = [\"F13\"]\n");
    let mut grabber = Command::new(python())
        .arg(script("grab_key.py"))
        .arg("191")
        .env("DISPLAY", &w.xvfb.display)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn grab_key.py");
    let mut line = String::new();
    let _ = BufReader::new(grabber.stdout.take().expect("stdout")).read_line(&mut line);
    assert_eq!(
        line.trim(),
        "grabbed",
        "the other client could not grab 191"
    );

    let tray = w.spawn_tray("tray", &[]);
    let expected = "Duress: chord unavailable: F13 is taken by another application";
    tray.wait_menu(Duration::from_secs(20), expected, |m| {
        Tray::status_line(m) == expected
    });
    let reported = duress_tests::wait_until(Duration::from_secs(20), || {
        w.device()["hotkey"]["state"] == "unavailable"
    });
    assert!(reported, "{:#}", w.device());
    let out = w.agent.run(&["trigger"]);
    assert!(
        out.status.success(),
        "trigger: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(w.wait_incident("cli", Duration::from_secs(10)).is_some());
    let _ = grabber.kill();
    let _ = grabber.wait();
}
