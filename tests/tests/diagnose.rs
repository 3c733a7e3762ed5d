//! `duress-agent diagnose` (issue 18, item 6) against the real tray app under a private Xvfb
//! and the real receiver: exit 0 with every check passed on a working station; exit 1, naming
//! the problem, once no receiver answers.

#[path = "../tray/harness.rs"]
mod harness;

use std::time::Duration;

use harness::{Tray, World, ensure_sni_watcher};

/// A working station (tray running, chord registered, receiver answering) is diagnosed as
/// protected: exit 0, the status line word for word, the keystore read, the chord's back end and
/// state, the receiver accepted a heartbeat over a TLS identity checked against the policy's CA
/// file. With the receiver stopped, the same command exits 1 and says why.
#[test]
fn diagnose_exits_0_when_protected_and_1_with_the_reason_when_not() {
    ensure_sni_watcher();
    let w = World::new("");
    let tray = w.spawn_tray("tray", &[]);
    tray.wait_menu(Duration::from_secs(20), "Duress: on", |m| {
        Tray::status_line(m) == "Duress: on"
    });
    // The chord state reaches the state database with the first acknowledged heartbeat.
    let reported = duress_tests::wait_until(Duration::from_secs(15), || {
        w.agent.status()["hotkey"]["state"] == "registered"
    });
    assert!(reported, "{:#}", w.agent.status());

    let mut cmd = w.agent.command(&["diagnose", "--json"]);
    cmd.env("DISPLAY", &w.xvfb.display);
    let out = cmd.output().expect("diagnose");
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "diagnose --json is JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(out.status.code(), Some(0), "{d:#}");
    assert_eq!(d["protected"], true, "{d:#}");
    assert_eq!(d["status_line"], "Duress: on");
    assert_eq!(d["chord_backend"], "X11 key grab (global-hotkey)");
    assert!(
        d["keystore"].as_str().unwrap_or_default().starts_with("ok"),
        "{d:#}"
    );
    assert!(
        d["policy_source"]
            .as_str()
            .unwrap_or_default()
            .contains("agent.toml"),
        "{d:#}"
    );
    let r = &d["receivers"][0];
    assert_eq!(r["reachable"], true, "{d:#}");
    assert_eq!(r["answer"], "accepted (device active)");
    assert!(
        r["tls_identity"]
            .as_str()
            .unwrap_or_default()
            .starts_with("CA file "),
        "{d:#}"
    );
    assert!(r["clock_offset_ms"].is_i64(), "{d:#}");

    // The text form says the same for a person.
    let text = w.agent.run(&["diagnose"]);
    let text_out = String::from_utf8_lossy(&text.stdout);
    assert!(text_out.starts_with("verdict: PROTECTED"), "{text_out}");
    assert!(text_out.contains("TLS identity: CA file "), "{text_out}");

    // No receiver answers: not protected, and the reason is named.
    let mut receiver = w.receiver;
    receiver.stop();
    let out = w.agent.run(&["diagnose", "--json"]);
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(out.status.code(), Some(1), "{d:#}");
    assert_eq!(d["protected"], false);
    let problems: Vec<&str> = d["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    assert!(
        problems.contains(&"no receiver accepted a heartbeat"),
        "{problems:?}"
    );
    assert!(
        d["receivers"][0]["answer"]
            .as_str()
            .unwrap_or_default()
            .starts_with("unreachable: "),
        "{d:#}"
    );
    drop(tray);
}
