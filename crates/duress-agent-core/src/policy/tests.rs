use super::*;

const FULL: &str = r#"
[[receivers]]
url = "https://127.0.0.1:8443"
ca_cert = "/path/to/cert.pem"
[[receivers]]
url = "https://backup.example.org:8443/"
[enrollment]
token = "tok-SECRET-123"
[location]
label = "Bldg A, Floor 2, Room 214"
country = "US"
A1 = "MN"
A2 = "Ramsey"
A3 = "Saint Paul"
A4 = "Downtown"
A5 = "Lowertown"
A6 = "Old Street"
RD = "University Ave"
PRD = "N"
POD = "W"
STS = "Ave"
HNO = "100"
HNS = "A"
LMK = "Capitol"
LOC = "north entrance"
NAM = "Duress U"
PC = "55101"
BLD = "A"
FLR = "2"
UNIT = "7"
ROOM = "214"
SEAT = "3"
PLC = "office"
[hotkey]
chords = ["Ctrl+Alt+Shift+D", "Ctrl+Alt+F12"]
[heartbeat]
interval_s = 30
"#;

/// The full example with every key parses into the typed policy, field for field.
#[test]
fn full_example_parses_every_key() {
    let p = Policy::from_toml_str(FULL, "test").unwrap();
    assert_eq!(p.receivers.len(), 2);
    assert_eq!(p.receivers[0].url.as_str(), "https://127.0.0.1:8443/");
    assert_eq!(
        p.receivers[0].ca_cert.as_deref(),
        Some(Path::new("/path/to/cert.pem"))
    );
    assert_eq!(p.receivers[1].ca_cert, None);
    assert_eq!(
        p.enrollment.token.as_ref().unwrap().expose(),
        "tok-SECRET-123"
    );
    let l = &p.location;
    assert_eq!(l.label.as_deref(), Some("Bldg A, Floor 2, Room 214"));
    for (name, value) in [
        ("country", "US"),
        ("A1", "MN"),
        ("A2", "Ramsey"),
        ("A3", "Saint Paul"),
        ("A4", "Downtown"),
        ("A5", "Lowertown"),
        ("A6", "Old Street"),
        ("RD", "University Ave"),
        ("PRD", "N"),
        ("POD", "W"),
        ("STS", "Ave"),
        ("HNO", "100"),
        ("HNS", "A"),
        ("LMK", "Capitol"),
        ("LOC", "north entrance"),
        ("NAM", "Duress U"),
        ("PC", "55101"),
        ("BLD", "A"),
        ("FLR", "2"),
        ("UNIT", "7"),
        ("ROOM", "214"),
        ("SEAT", "3"),
        ("PLC", "office"),
    ] {
        let got = l
            .fields()
            .into_iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v);
        assert_eq!(got, Some(value), "location {name}");
    }
    assert_eq!(p.hotkey.chords, vec!["Ctrl+Alt+Shift+D", "Ctrl+Alt+F12"]);
    assert_eq!(p.heartbeat.interval_s, 30);
}

/// An empty file is a valid policy with the documented defaults and no receivers.
#[test]
fn defaults() {
    let p = Policy::from_toml_str("", "test").unwrap();
    assert!(p.receivers.is_empty());
    assert!(p.enrollment.token.is_none());
    assert_eq!(p.location, Location::default());
    assert_eq!(p.hotkey.chords, vec![DEFAULT_CHORD]);
    assert_eq!(p.heartbeat.interval_s, 60);
    assert!(matches!(p.require_receivers(), Err(Error::NoReceiver)));
    // Empty sections take their defaults too.
    let p = Policy::from_toml_str("[hotkey]\n[heartbeat]\n", "test").unwrap();
    assert_eq!(p.hotkey.chords, vec![DEFAULT_CHORD]);
    assert_eq!(p.heartbeat.interval_s, 60);
    assert_eq!(p, Policy::default());
}

fn err_of(text: &str) -> String {
    Policy::from_toml_str(text, "test").unwrap_err().to_string()
}

/// An unknown key is an error naming it: top level, nested, inside a receiver, inside location.
#[test]
fn unknown_keys_are_errors_naming_the_key() {
    let e = err_of("colour = \"red\"\n");
    assert!(e.contains("`colour`"), "{e}");
    let e = err_of("[heartbeat]\ninterval = 5\n");
    assert!(e.contains("`heartbeat.interval`"), "{e}");
    let e = err_of("[[receivers]]\nurl = \"https://a.example\"\ncacert = \"x\"\n");
    assert!(e.contains("receivers.0.cacert"), "{e}");
    let e = err_of("[location]\nROOM = \"1\"\nROOOM = \"2\"\n");
    assert!(e.contains("`location.ROOOM`"), "{e}");
    let e = err_of("[location]\nroom = \"1\"\n");
    assert!(
        e.contains("`location.room`"),
        "lower-case RFC 5139 names are not the names: {e}"
    );
    let e = err_of("[enrollment]\ntoken = \"t\"\napprove = true\n");
    assert!(e.contains("`enrollment.approve`"), "{e}");
    let e = err_of("[extra]\nx = 1\n");
    assert!(e.contains("`extra`"), "{e}");
}

/// Receivers must be https: http:// and non-URLs are refused.
#[test]
fn http_is_refused() {
    let e = err_of("[[receivers]]\nurl = \"http://127.0.0.1:8443\"\n");
    assert!(e.contains("https"), "{e}");
    let e = err_of("[[receivers]]\nurl = \"not a url\"\n");
    assert!(e.contains("not a URL"), "{e}");
    assert!(ReceiverConfig::new("http://x", None).is_err());
    // A policy built in code is validated too.
    let p = Policy {
        receivers: vec![ReceiverConfig {
            url: Url::parse("http://x.example").unwrap(),
            ca_cert: None,
            ca_sha256: None,
            ack_key: None,
        }],
        ..Default::default()
    };
    assert!(p.validate().is_err());
}

/// Heartbeat interval bounds, empty chords and bad location values are refused with the key named.
#[test]
fn values_are_validated() {
    assert!(err_of("[heartbeat]\ninterval_s = 9\n").contains("heartbeat.interval_s"));
    assert!(err_of("[heartbeat]\ninterval_s = 3601\n").contains("heartbeat.interval_s"));
    Policy::from_toml_str("[heartbeat]\ninterval_s = 10\n", "t").unwrap();
    Policy::from_toml_str("[heartbeat]\ninterval_s = 3600\n", "t").unwrap();
    assert!(err_of("[hotkey]\nchords = []\n").contains("hotkey.chords"));
    let seventeen = vec!["\"Ctrl+Alt+F1\""; 17].join(", ");
    assert!(err_of(&format!("[hotkey]\nchords = [{seventeen}]\n")).contains("more than 16 chords"));
    let long = "x".repeat(300);
    assert!(err_of(&format!("[location]\nROOM = \"{long}\"\n")).contains("ROOM"));
    assert!(err_of("[heartbeat]\ninterval_s = \"60\"\n").contains("interval_s"));
}

/// The enrollment token never shows in `Debug` output of the policy.
#[test]
fn token_is_redacted_in_debug() {
    let p = Policy::from_toml_str(FULL, "test").unwrap();
    let dbg = format!("{p:?}");
    assert!(!dbg.contains("tok-SECRET-123"), "{dbg}");
    assert!(dbg.contains("<redacted>"));
}

/// `--policy` beats `DURESS_AGENT_POLICY`, which beats the OS default.
#[test]
fn path_resolution_order() {
    let flag = Path::new("/f.toml");
    assert_eq!(
        resolve_path_from(Some(flag), Some("/e.toml".into())).unwrap(),
        PolicySource::Flag(flag.into())
    );
    assert_eq!(
        resolve_path_from(None, Some("/e.toml".into())).unwrap(),
        PolicySource::Env("/e.toml".into())
    );
    #[cfg(target_os = "linux")]
    assert_eq!(
        resolve_path_from(None, None).unwrap(),
        PolicySource::OsDefault("/etc/duress/agent.toml".into())
    );
}

/// A relative `ca_cert` is resolved against the policy file's directory; a missing explicit file
/// is an error.
#[test]
fn load_from_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        "[[receivers]]\nurl = \"https://r.example\"\nca_cert = \"tls/ca.pem\"\n",
    )
    .unwrap();
    let p = Policy::load(&path).unwrap();
    assert_eq!(p.receivers[0].ca_cert, Some(dir.path().join("tls/ca.pem")));
    let e = Policy::load(&dir.path().join("missing.toml")).unwrap_err();
    assert!(e.to_string().contains("cannot read"), "{e}");
}

const TRAY_HELP_NETWORK: &str = r#"
[[receivers]]
url = "https://127.0.0.1:8443"
ca_sha256 = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89"
[hotkey]
chords = ["Ctrl+Alt+Shift+D", "F13"]
repeat = 2
window_ms = 2000
hold_ms = 500
[tray]
hidden_button_label = "Print queue"
hotspot = "bottom-right"
covert_ack = true
allow_user_location = true
allow_quit = true
[help]
emergency_number = "112"
security_phone = "651-793-1717"
security_email = "security@example.edu"
teams_url = "https://teams.microsoft.com/l/channel/x"
text = "Use it early."
[network]
proxy = "http://proxy.example.edu:8080"
"#;

/// The tray, help, network, hotkey-guard and pin keys parse to what they say.
#[test]
fn tray_help_network_and_guard_keys_parse() {
    let p = Policy::from_toml_str(TRAY_HELP_NETWORK, "t").unwrap();
    assert!(p.receivers[0].ca_sha256.is_some());
    assert_eq!(p.hotkey.chords, ["Ctrl+Alt+Shift+D", "F13"]);
    assert_eq!(
        (p.hotkey.repeat, p.hotkey.window_ms, p.hotkey.hold_ms),
        (2, 2000, 500)
    );
    assert_eq!(p.tray.hidden_button_label, "Print queue");
    assert_eq!(p.tray.hotspot, Hotspot::BottomRight);
    assert!(p.tray.covert_ack && p.tray.allow_user_location && p.tray.allow_quit);
    assert_eq!(p.help.emergency_number, "112");
    assert_eq!(p.help.security_phone.as_deref(), Some("651-793-1717"));
    assert_eq!(
        p.network.proxy.as_deref(),
        Some("http://proxy.example.edu:8080")
    );
    let d = Policy::default();
    assert_eq!(d.tray.hidden_button_label, "Request assistance");
    assert_eq!(d.tray.hotspot, Hotspot::Off);
    assert!(!d.tray.covert_ack && !d.tray.allow_user_location && !d.tray.allow_quit);
    assert_eq!(d.help.emergency_number, "911");
    assert_eq!((d.hotkey.repeat, d.hotkey.hold_ms), (1, 0));
}

/// Out-of-range guard values, a bad pin, a bad hotspot and an http Teams link are refused by name.
#[test]
fn tray_and_guard_values_are_validated() {
    for (text, needle) in [
        ("[hotkey]\nrepeat = 0", "hotkey.repeat"),
        ("[hotkey]\nwindow_ms = 5", "hotkey.window_ms"),
        ("[hotkey]\nhold_ms = 60000", "hotkey.hold_ms"),
        ("[tray]\nhidden_button_label = \"\"", "hidden_button_label"),
        ("[tray]\nhotspot = \"middle\"", "middle"),
        ("[help]\nteams_url = \"http://x\"", "teams_url"),
        (
            "[[receivers]]\nurl = \"https://a\"\nca_sha256 = \"zz\"",
            "ca_sha256",
        ),
        ("[tray]\nhidden_buton_label = \"x\"", "hidden_buton_label"),
    ] {
        let e = err_of(text);
        assert!(e.contains(needle), "{text:?} -> {e}");
    }
}

/// `[cancel]`: label, chords and the PIN hashes parse; bad hashes, a duress PIN without a PIN
/// and a cancel chord equal to the alarm chord are refused by name.
#[test]
fn cancel_keys_parse_and_are_validated() {
    let d = Policy::default();
    assert_eq!(d.cancel.label, "I'm OK — cancel");
    assert!(!d.cancel.requires_pin() && d.cancel.chords.is_empty());
    // sha256("1234") and sha256("9999").
    let ok = "03ac674216f3e15c761ee1a5e255f067953623c8b388b4459e13f978d7c846f4";
    let duress = "888df25ae35772424a560c7152a1de794440e0ea5cfee62828333a456a506e05";
    let c = Policy::from_toml_str("[cancel]\nchords = [\"Ctrl+Alt+Shift+O\"]", "t").unwrap();
    assert_eq!(c.cancel.chords, ["Ctrl+Alt+Shift+O"]);
    let p = Policy::from_toml_str(
        &format!(
            "[cancel]\nlabel = \"All fine\"\n\
             pin_sha256 = \"{ok}\"\nduress_pin_sha256 = \"{duress}\""
        ),
        "t",
    )
    .unwrap();
    assert_eq!(p.cancel.label, "All fine");
    use duress_core::PinCheck;
    assert_eq!(p.cancel.check_pin("1234"), Some(PinCheck::Ok));
    assert_eq!(p.cancel.check_pin("9999"), Some(PinCheck::Duress));
    assert_eq!(p.cancel.check_pin("12345"), Some(PinCheck::Wrong));
    assert_eq!(p.cancel.check_pin(""), Some(PinCheck::Wrong));
    assert_eq!(d.cancel.check_pin("1234"), None, "no PIN asked");
    for (text, needle) in [
        ("[cancel]\npin_sha256 = \"abc\"", "cancel.pin_sha256"),
        (
            &format!("[cancel]\nduress_pin_sha256 = \"{duress}\"") as &str,
            "needs cancel.pin_sha256",
        ),
        (
            "[cancel]\nchords = [\"Ctrl+Alt+Shift+D\"]",
            "repeats the alarm chord",
        ),
        ("[cancel]\nlabel = \"\"", "cancel.label"),
    ] {
        let e = err_of(text);
        assert!(e.contains(needle), "{text:?} -> {e}");
    }
}

/// `--token-file`: the first line, trimmed; an empty or missing file is an error naming it.
#[test]
fn token_file_reads_the_first_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("token");
    std::fs::write(&f, "det_abc \nsecond line\n").unwrap();
    assert_eq!(super::read_secret_file(&f).unwrap().expose(), "det_abc");
    std::fs::write(&f, "\n").unwrap();
    assert!(
        super::read_secret_file(&f)
            .unwrap_err()
            .to_string()
            .contains("no token")
    );
    let missing = dir.path().join("nope");
    assert!(
        super::read_secret_file(&missing)
            .unwrap_err()
            .to_string()
            .contains("nope")
    );
}

/// In a release build (the switch injected) a `--policy`/`DURESS_AGENT_POLICY` file a user
/// could have written is ignored, the machine policy is used instead, and the report says
/// why; a debug build honours it. The real file check: a file writable by others is refused; a
/// file owned by someone other than root is refused (checked by chown when the test runs as
/// root, else by the test user's own file).
#[test]
fn release_builds_ignore_a_user_writable_policy_file() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("agent.toml");
    std::fs::write(&f, "[[receivers]]\nurl = \"https://evil.example\"\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
    let why = check_policy_file(&f).unwrap_err();
    assert!(why.contains("writable by group or others"), "{why}");

    // Debug build: honoured, from the flag and from the environment.
    let debug = load_resolved_checked(Some(&f), None, false).unwrap();
    assert_eq!(
        debug.policy.receivers[0].url.as_str(),
        "https://evil.example/"
    );
    assert!(debug.ignored.is_none());
    assert!(debug.report().source.starts_with("flag:"));
    // Release build: ignored, with the reason in the report.
    for (flag, env) in [
        (Some(f.as_path()), None),
        (None, Some(f.clone().into_os_string())),
    ] {
        let release = load_resolved_checked(flag, env, true).unwrap();
        assert!(
            release
                .policy
                .receivers
                .iter()
                .all(|r| r.url.as_str() != "https://evil.example/"),
            "the user's receiver must not be used"
        );
        let note = release.ignored.clone().expect("says it was ignored");
        assert!(
            note.contains("ignored") && note.contains("writable"),
            "{note}"
        );
        assert!(release.report().source.starts_with("os:"));
        assert_eq!(release.report().ignored, Some(note));
    }

    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let uid = std::fs::metadata(&f).unwrap().uid();
    if uid == 0 {
        // Root's own 0644 file in root's directories: honoured.
        check_policy_file(&f).unwrap();
        let ok = load_resolved_checked(Some(&f), None, true).unwrap();
        assert!(ok.ignored.is_none());
        std::os::unix::fs::chown(&f, Some(1000), None).unwrap();
    }
    let why = check_policy_file(&f).unwrap_err();
    assert!(why.contains("not root"), "{why}");
}

/// The policy hash is stable for the same policy, differs for another, and ignores the token.
#[test]
fn policy_hash_ignores_secrets() {
    let a = Policy::from_toml_str("[enrollment]\ntoken = \"det_a\"\n", "a").unwrap();
    let b = Policy::from_toml_str("[enrollment]\ntoken = \"det_b\"\n", "b").unwrap();
    let c = Policy::from_toml_str("[heartbeat]\ninterval_s = 30\n", "c").unwrap();
    assert_eq!(policy_sha256(&a), policy_sha256(&b));
    assert_ne!(policy_sha256(&a), policy_sha256(&c));
    assert_eq!(policy_sha256(&a).len(), 64);
}
