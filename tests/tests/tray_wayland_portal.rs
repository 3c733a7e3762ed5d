//! Wayland: the real tray app (told it runs in a Wayland session) against a test
//! xdg-desktop-portal (`tests/tray/portal.py`) implementing org.freedesktop.portal.GlobalShortcuts
//! as the specification defines it, on the test run's private session bus (scripts/with-keyring).
//! Proves the portal's success path (bind → Activated → incident; Deactivated ends a hold),
//! that a shortcut bound to no key is "unavailable: no key assigned — bind it in Settings"
//! in the status line and the heartbeat, that ShortcutsChanged is followed, and what the status
//! line says where no portal exists. GTK itself stays on the private Xvfb (GDK_BACKEND=x11).

#[path = "../tray/harness.rs"]
mod harness;

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use harness::{Tray, World, ensure_sni_watcher, python, script, secs};

/// One test at a time owns org.freedesktop.portal.Desktop on the bus.
static PORTAL: Mutex<()> = Mutex::new(());

const WAYLAND: &[(&str, &str)] = &[("XDG_SESSION_TYPE", "wayland")];

/// The test portal process: commands on its stdin, its lines collected from stdout.
struct TestPortal {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl TestPortal {
    /// Starts the portal; `assign` is the trigger it gives every shortcut at bind time.
    fn start(assign: &str) -> TestPortal {
        let mut child = Command::new(python())
            .arg(script("portal.py"))
            .arg(assign)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tests/tray/portal.py");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = TestPortal {
            child,
            stdin,
            lines,
        };
        p.expect("ready", Duration::from_secs(10));
        p
    }

    /// Waits for a line starting with `prefix`; panics otherwise.
    fn expect(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(l) => eprintln!("portal: {l}"),
                Err(_) => panic!("the test portal never said {prefix:?}"),
            }
        }
    }

    fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").expect("portal stdin");
        self.expect(&format!("sent {command}"), Duration::from_secs(5));
    }
}

impl Drop for TestPortal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chord_line(menu: &[harness::MenuEntry]) -> String {
    menu.iter()
        .find(|e| e.label.starts_with("Chord: "))
        .map(|e| e.label.clone())
        .unwrap_or_default()
}

/// bind → the desktop assigns a key → `Duress: on`; with `hold_ms = 1000`, Activated followed
/// at once by Deactivated raises nothing, Activated held past 1 s raises one incident.
#[test]
fn portal_bind_activated_and_deactivated_drive_the_hold_guard() {
    let _one = PORTAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    ensure_sni_watcher();
    let mut portal = TestPortal::start("Ctrl+Alt+Shift+D");
    let w = World::new("[hotkey]\nchords = [\"Ctrl+Alt+Shift+D\"]\nhold_ms = 1000\n");
    let tray = w.spawn_tray("tray", WAYLAND);
    let bound = portal.expect("bound ", Duration::from_secs(20));
    assert_eq!(
        bound, "bound duress-0 CTRL+ALT+SHIFT+d",
        "the preferred trigger in the specification's syntax"
    );
    let menu = tray.wait_menu(Duration::from_secs(20), "Duress: on", |m| {
        Tray::status_line(m) == "Duress: on"
    });
    assert_eq!(chord_line(&menu), "Chord: Ctrl+Alt+Shift+D (hold 1 s)");

    // A tap: released before the hold time.
    portal.send("activate");
    std::thread::sleep(Duration::from_millis(150));
    portal.send("deactivate");
    std::thread::sleep(Duration::from_millis(2000));
    assert!(
        w.incidents().is_empty(),
        "a tap shorter than hold_ms raises nothing; log:\n{}",
        tray.log_text()
    );

    // A hold past 1 s.
    portal.send("activate");
    let pressed = Instant::now();
    std::thread::sleep(Duration::from_millis(1400));
    portal.send("deactivate");
    let incident = w.wait_incident("hotkey", Duration::from_secs(5));
    assert!(
        incident.is_some(),
        "no incident {:.1} s after a 1.4 s hold; log:\n{}",
        secs(pressed),
        tray.log_text()
    );
    assert_eq!(w.incidents().len(), 1, "one hold, one incident");
}

/// A shortcut the desktop bound to no key is a dead chord: the status line and the heartbeat
/// say "no key assigned — bind it in Settings". When the user then assigns a key
/// (ShortcutsChanged), the agent follows: `Duress: on`, and Activated raises an incident.
#[test]
fn an_unbound_portal_shortcut_is_unavailable_until_shortcuts_changed_assigns_a_key() {
    let _one = PORTAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    ensure_sni_watcher();
    let mut portal = TestPortal::start("");
    let w = World::new("");
    let tray = w.spawn_tray("tray", WAYLAND);
    portal.expect("bound ", Duration::from_secs(20));
    let expected = "Duress: chord unavailable: no key assigned — bind it in Settings";
    let menu = tray.wait_menu(Duration::from_secs(20), expected, |m| {
        Tray::status_line(m) == expected
    });
    assert_eq!(chord_line(&menu), "Chord: unavailable (see Help)");
    let reported = duress_tests::wait_until(Duration::from_secs(20), || {
        w.device()["hotkey"]["reason"] == "no key assigned — bind it in Settings"
    });
    assert!(reported, "heartbeat: {:#}", w.device());

    portal.send("change Ctrl+Alt+F12");
    let menu = tray.wait_menu(
        Duration::from_secs(10),
        "Duress: on after the change",
        |m| Tray::status_line(m) == "Duress: on",
    );
    assert_eq!(chord_line(&menu), "Chord: Ctrl+Alt+F12");
    portal.send("activate");
    portal.send("deactivate");
    assert!(
        w.wait_incident("hotkey", Duration::from_secs(5)).is_some(),
        "Activated after the change raises an incident; log:\n{}",
        tray.log_text()
    );

    // The user removes the key again: unavailable again.
    portal.send("change");
    tray.wait_menu(Duration::from_secs(10), expected, |m| {
        Tray::status_line(m) == expected
    });
}

/// A Wayland session without the portal: the status line says the chord is unavailable and
/// names the way out (bind `duress-agent trigger` as a desktop shortcut); the menu item still
/// raises an alarm.
#[test]
fn without_the_portal_the_status_line_says_how_to_bind_the_command() {
    let _one = PORTAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    ensure_sni_watcher();
    let w = World::new("");
    let tray = w.spawn_tray("tray", WAYLAND);
    let menu = tray.wait_menu(Duration::from_secs(30), "the no-portal status", |m| {
        Tray::status_line(m).starts_with(
            "Duress: chord unavailable: Wayland session without the GlobalShortcuts portal",
        )
    });
    let line = Tray::status_line(&menu);
    assert!(
        line.ends_with("bind `duress-agent trigger` as a desktop shortcut (see Help)"),
        "{line}"
    );
    tray.click("Request assistance");
    assert!(
        w.wait_incident("tray", Duration::from_secs(5)).is_some(),
        "the menu item still works; log:\n{}",
        tray.log_text()
    );
}
