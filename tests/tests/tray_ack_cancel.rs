//! The covert acknowledgement end to end, and the duress-safe cancel, against the real tray
//! app under a private Xvfb, the real receiver and its console's HTTP API (issue 18, items 1–2).

#[path = "../tray/harness.rs"]
mod harness;

use std::io::Write as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use harness::{MenuEntry, Tray, World, ensure_sni_watcher, secs};

/// sha256("1234") and sha256("9999"): the cancel PIN and the duress PIN of these tests.
const PIN_SHA256: &str = "03ac674216f3e15c761ee1a5e255f067953623c8b388b4459e13f978d7c846f4";
const DURESS_PIN_SHA256: &str = "888df25ae35772424a560c7152a1de794440e0ea5cfee62828333a456a506e05";
const OFFICER_PASSWORD: &str = "correct horse battery staple";

/// The standard test policy with a 60 s heartbeat (the default), so an acknowledgement within
/// 10 s can only come from the fast polling after a press.
fn slow_heartbeat(w: &World) {
    let text = std::fs::read_to_string(&w.agent.policy).expect("policy");
    let text = text.replace("interval_s = 10", "interval_s = 60");
    std::fs::write(&w.agent.policy, text).expect("policy");
}

/// Everything but the "last contact" line, which moves with heartbeats.
fn without_heartbeat_time(menu: &[MenuEntry]) -> Vec<MenuEntry> {
    menu.iter()
        .filter(|e| !e.label.starts_with("Last contact with Security:"))
        .cloned()
        .collect()
}

/// An officer signed in to the console over HTTPS (cookie and CSRF token kept by hand).
struct Officer {
    client: reqwest::Client,
    base: String,
    cookie: String,
    csrf: String,
}

fn form(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            let enc = |s: &str| -> String {
                s.bytes()
                    .map(|b| match b {
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                            (b as char).to_string()
                        }
                        _ => format!("%{b:02X}"),
                    })
                    .collect()
            };
            format!("{}={}", enc(k), enc(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

impl Officer {
    /// Adds the user with the receiver's CLI and signs in like a browser.
    async fn sign_in(w: &World) -> Officer {
        let mut add = std::process::Command::new(duress_tests::bin("duress-receiver"))
            .args(["user", "add", "--data-dir"])
            .arg(&w.receiver.data_dir)
            .args([
                "--username",
                "officer1",
                "--role",
                "officer",
                "--password-stdin",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("duress-receiver user add");
        add.stdin
            .take()
            .expect("stdin")
            .write_all(OFFICER_PASSWORD.as_bytes())
            .expect("password");
        assert!(add.wait().expect("user add").success(), "user add failed");
        let client =
            duress_loadgen::client::https_client(&w.receiver.ca_path(), 2).expect("client");
        let base = w.receiver.url();
        let cookie =
            duress_loadgen::console_feed::sign_in(&client, &base, "officer1", OFFICER_PASSWORD)
                .await
                .expect("sign-in");
        let board = client
            .get(format!("{base}/"))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("board")
            .text()
            .await
            .expect("board text");
        let start = board
            .find("name=\"csrf-token\" content=\"")
            .expect("csrf meta tag")
            + 27;
        let csrf = board[start..].split('"').next().expect("csrf").to_owned();
        Officer {
            client,
            base,
            cookie,
            csrf,
        }
    }

    /// `POST /incidents/{id}/claim`, as the Claim button does.
    async fn claim(&self, incident: &str) {
        let resp = self
            .client
            .post(format!("{}/incidents/{incident}/claim", self.base))
            .header("cookie", &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("csrf", &self.csrf)]))
            .send()
            .await
            .expect("claim");
        assert_eq!(resp.status().as_u16(), 303, "claim refused");
    }
}

/// The officer's claim reaches the tray within 10 s although heartbeats are 60 s apart: the
/// status line gains its trailing period (`covert_ack`), nothing else on the menu changes, no
/// window appears, and `duress-agent status --json` (another process) lists the claimed
/// incident in `claimed_incidents`. Then "I'm OK — cancel" in the tray sends a `cancel` event
/// that annotates the incident and leaves it open, again changing nothing on screen.
#[test]
fn an_officers_claim_reaches_the_tray_within_10_s_and_a_cancel_keeps_the_incident_open() {
    ensure_sni_watcher();
    let w = World::new("[tray]\ncovert_ack = true\n");
    slow_heartbeat(&w);
    let tray = w.spawn_tray("tray", &[]);
    let before = tray.wait_menu(Duration::from_secs(20), "Duress: on", |m| {
        Tray::status_line(m) == "Duress: on"
    });
    assert!(
        before.iter().any(|e| e.label == "I'm OK — cancel"),
        "the cancel item is in the menu: {before:#?}"
    );

    w.xvfb.key("ctrl+alt+shift+d");
    let incident = w
        .wait_incident("hotkey", Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no incident from the chord; log:\n{}", tray.log_text()));
    let incident_id = incident["incident_id"]
        .as_str()
        .expect("incident id")
        .to_owned();
    let screen_before = w.xvfb.screenshot_root();

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let officer = rt.block_on(Officer::sign_in(&w));
    rt.block_on(officer.claim(&incident_id));
    let claimed = Instant::now();
    let acked = tray.wait_menu(Duration::from_secs(10), "the covert acknowledgement", |m| {
        Tray::status_line(m) == "Duress: on."
    });
    eprintln!(
        "acknowledgement shown {:.1} s after the claim",
        secs(claimed)
    );
    assert_eq!(
        without_heartbeat_time(&acked)[1..],
        without_heartbeat_time(&before)[1..],
        "only the status line's trailing period changes"
    );
    assert!(
        w.xvfb.visible_windows("Duress").is_empty(),
        "no window appears"
    );
    assert_eq!(
        w.xvfb.screenshot_root(),
        screen_before,
        "nothing on screen changed"
    );
    let status = w.agent.status();
    let listed: Vec<&str> = status["claimed_incidents"]
        .as_array()
        .expect("claimed_incidents")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(listed, [incident_id.as_str()], "{status:#}");

    // The duress-safe cancel: an annotation, never a close.
    tray.click("I'm OK — cancel");
    let ok = duress_tests::wait_until(Duration::from_secs(5), || {
        !w.events_of_kind("cancel").is_empty()
    });
    assert!(ok, "no cancel event stored; log:\n{}", tray.log_text());
    let incidents = w.incidents();
    let inc = incidents
        .iter()
        .find(|i| i["incident_id"] == incident_id.as_str())
        .expect("the incident");
    assert_eq!(inc["status"], "open", "a cancel never closes: {inc:#}");
    assert!(
        !inc["cancelled_at"].is_null(),
        "the cancel is on the incident: {inc:#}"
    );
    assert_eq!(
        inc["cancel_with_duress_pin"], false,
        "no PIN asked: not flagged: {inc:#}"
    );
    std::thread::sleep(Duration::from_millis(3500)); // > 1 menu refresh
    let after = tray.menu().expect("menu");
    assert_eq!(
        without_heartbeat_time(&after),
        without_heartbeat_time(&acked),
        "a cancel changes no menu text"
    );
    assert!(w.xvfb.visible_windows("Duress").is_empty(), "no window");
}

/// The claims of the stored cancel events, decoded from the exported JWS.
fn cancel_claims(w: &World) -> Vec<serde_json::Value> {
    w.events_of_kind("cancel")
        .iter()
        .map(|e| {
            let jws = e["jws"].as_str().expect("jws");
            let payload = jws.split('.').nth(1).expect("payload");
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .expect("base64url");
            serde_json::from_slice(&bytes).expect("claims JSON")
        })
        .collect()
}

/// `duress-agent trigger --cancel --pin-stdin` with a PIN policy: the right PIN, the duress PIN
/// and a wrong PIN all send a cancel with the same output and exit code; the signed claims the
/// receiver stored say `ok`, `duress` and `wrong`, and the incident stays open.
#[test]
fn cli_cancel_with_the_duress_pin_is_sent_like_any_other_and_flagged_in_the_claims() {
    let w = World::new(&format!(
        "[cancel]\npin_sha256 = \"{PIN_SHA256}\"\nduress_pin_sha256 = \"{DURESS_PIN_SHA256}\"\n"
    ));
    let out = w.agent.run(&["trigger"]);
    assert!(out.status.success());
    let mut outputs = Vec::new();
    for pin in ["1234", "9999", "4321"] {
        let mut child = w
            .agent
            .command(&["trigger", "--cancel", "--pin-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("trigger --cancel");
        writeln!(child.stdin.take().expect("stdin"), "{pin}").expect("pin");
        let out = child.wait_with_output().expect("trigger --cancel");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[1], "delivered", "{text}");
        outputs.push(lines[1].to_owned());
    }
    assert!(
        outputs.iter().all(|o| *o == outputs[0]),
        "same output for every PIN"
    );
    let mut pins: Vec<String> = cancel_claims(&w)
        .iter()
        .map(|c| c["cancel_pin"].as_str().unwrap_or("absent").to_owned())
        .collect();
    pins.sort();
    assert_eq!(pins, ["duress", "ok", "wrong"]);
    let incidents = w.incidents();
    assert_eq!(incidents.len(), 1, "cancels join the open incident");
    assert_eq!(incidents[0]["status"], "open");
    // The receiver's read model flags it for officers ("cancel with duress PIN").
    assert_eq!(
        incidents[0]["cancel_with_duress_pin"], true,
        "{:#}",
        incidents[0]
    );
    let mut listed: Vec<String> = incidents[0]["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "cancel")
        .map(|e| e["cancel_pin"].as_str().unwrap_or("absent").to_owned())
        .collect();
    listed.sort();
    assert_eq!(listed, ["duress", "ok", "wrong"]);
}
