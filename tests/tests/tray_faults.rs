//! The tray app when things go wrong: the chord taken by another X client, the receiver
//! down. Nothing may stop the agent; the status line says what is wrong; the heartbeat tells
//! Security; alarms still get through.

#[path = "../tray/harness.rs"]
mod harness;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::{Tray, World, ensure_sni_watcher, python, script};

/// Another X client holds Ctrl+Alt+Shift+D → the agent keeps running, the status line says
/// the chord is unavailable, the heartbeat reports it (the receiver's device list shows
/// `hotkey.state = unavailable`), and `duress-agent trigger` still raises an incident.
#[test]
fn chord_taken_by_another_client_is_reported_and_trigger_still_works() {
    ensure_sni_watcher();
    let w = World::new("");
    let mut grabber = Command::new(python())
        .arg(script("grab_key.py"))
        .args(["d", "control", "mod1", "shift"])
        .env("DISPLAY", &w.xvfb.display)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn grab_key.py");
    let mut line = String::new();
    let _ = BufReader::new(grabber.stdout.take().expect("stdout")).read_line(&mut line);
    assert_eq!(
        line.trim(),
        "grabbed",
        "the other client could not grab the chord"
    );

    let mut tray = w.spawn_tray("tray", &[]);
    let expected = "Duress: chord unavailable: Ctrl+Alt+Shift+D is taken by another application";
    let menu = tray.wait_menu(Duration::from_secs(20), expected, |m| {
        Tray::status_line(m) == expected
    });
    assert!(
        menu.iter()
            .any(|e| e.label == "Chord: unavailable (see Help)"),
        "{menu:#?}"
    );

    let reported = duress_tests::wait_until(Duration::from_secs(20), || {
        w.device()["hotkey"]["state"] == "unavailable"
    });
    let device = w.device();
    assert!(
        reported,
        "heartbeat did not report the dead chord: {device:#}"
    );
    assert!(
        device["hotkey"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("taken by another application"),
        "{device:#}"
    );

    let out = w.agent.run(&["trigger"]);
    assert!(
        out.status.success(),
        "trigger: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(w.wait_incident("cli", Duration::from_secs(10)).is_some());
    assert!(tray.is_running(), "the agent must keep running");
    let _ = grabber.kill();
    let _ = grabber.wait();
}

/// Receiver stopped → a `duress-agent trigger` stays queued (the CLI gives up after its 5 s)
/// and, once no receiver has answered for 30 s, the status line says since when and how many
/// alerts wait; receiver back → the *running tray agent* delivers the queue (the CLI has long
/// exited) and the line is back to `Duress: on`.
#[test]
fn receiver_down_shows_unreachable_and_queue_then_drains() {
    ensure_sni_watcher();
    let mut w = World::new("");
    let tray = w.spawn_tray("tray", &[]);
    tray.wait_menu(Duration::from_secs(20), "Duress: on", |m| {
        Tray::status_line(m) == "Duress: on"
    });

    w.receiver.stop();
    let out = w.agent.run(&["trigger"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("queued"),
        "the trigger cannot have been delivered: {stdout}"
    );

    let menu = tray.wait_menu(
        Duration::from_secs(60),
        "unreachable with 1 alert queued",
        |m| {
            let s = Tray::status_line(m);
            s.starts_with("Duress: receiver unreachable since ") && s.ends_with(" — 1 alert queued")
        },
    );
    eprintln!("status while down: {}", Tray::status_line(&menu));

    w.receiver.restart();
    assert!(
        w.wait_incident("cli", Duration::from_secs(20)).is_some(),
        "the running agent did not deliver the queued alarm; log:\n{}",
        tray.log_text()
    );
    tray.wait_menu(Duration::from_secs(20), "Duress: on again", |m| {
        Tray::status_line(m) == "Duress: on"
    });
    assert_eq!(w.agent.status()["queued"], 0, "queue drained");
}

/// A Wayland session whose desktop offers no GlobalShortcuts portal (none runs here): the
/// agent does not fall back to an X11 grab (under Wayland that is a silently dead chord — the
/// chord stays free for any X client), the status line says the chord is unavailable and how
/// to bind `duress-agent trigger`, and the heartbeat reports it.
#[test]
fn wayland_without_the_portal_says_the_chord_is_unavailable() {
    ensure_sni_watcher();
    let w = World::new("");
    let mut tray = w.spawn_tray(
        "tray",
        &[
            ("XDG_SESSION_TYPE", "wayland"),
            ("WAYLAND_DISPLAY", "wayland-duress-test"),
        ],
    );
    let menu = tray.wait_menu(
        Duration::from_secs(40),
        "chord unavailable (Wayland)",
        |m| {
            Tray::status_line(m).starts_with(
                "Duress: chord unavailable: Wayland session without the GlobalShortcuts portal",
            )
        },
    );
    assert!(
        Tray::status_line(&menu).contains("bind `duress-agent trigger` as a desktop shortcut"),
        "{menu:#?}"
    );
    let reported = duress_tests::wait_until(Duration::from_secs(20), || {
        w.device()["hotkey"]["state"] == "unavailable"
    });
    assert!(reported, "heartbeat did not report it: {:#}", w.device());

    // No X11 grab was made: another client can take the chord.
    let mut grabber = Command::new(python())
        .arg(script("grab_key.py"))
        .args(["d", "control", "mod1", "shift"])
        .env("DISPLAY", &w.xvfb.display)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn grab_key.py");
    let mut line = String::new();
    let _ = BufReader::new(grabber.stdout.take().expect("stdout")).read_line(&mut line);
    assert_eq!(
        line.trim(),
        "grabbed",
        "the agent grabbed the chord on X11 under Wayland"
    );
    let _ = grabber.kill();
    let _ = grabber.wait();
    assert!(tray.is_running());
}
