//! Policy sources: the schema list, the merge, and each OS format (registry in memory, plists
//! and TOML files in temp dirs) — precedence, every key, unknown keys, the user layer.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::macos::{self, MacPaths};
use super::windows::{self, Hive, MemoryRegistry, RegValue};
use super::*;
use crate::policy::Hotspot;

/// Runs `f` with a tracing subscriber writing into a string, returns `f`'s result and the log.
fn with_log<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let out = tracing::subscriber::with_default(sub, f);
    let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    (out, log)
}

fn toml_of(text: &str) -> toml::Table {
    toml::from_str(text).unwrap()
}

/// The policy every format must produce from "every key set to its example value".
fn every_key_policy() -> Policy {
    parse_table(&schema::example_table(), "example").unwrap()
}

// ---- the schema ----------------------------------------------------------------------------

/// The key list is read from the `Policy` type: every table and key of the documented schema is
/// there with the kind the OS formats need, and nothing else.
#[test]
fn schema_lists_every_key_with_its_kind() {
    let paths: Vec<String> = keys().iter().map(Key::path).collect();
    let location = [
        "label", "country", "A1", "A2", "A3", "A4", "A5", "A6", "RD", "PRD", "POD", "STS", "HNO",
        "HNS", "LMK", "LOC", "NAM", "PC", "BLD", "FLR", "UNIT", "ROOM", "SEAT", "PLC",
    ];
    let mut expected: Vec<String> = [
        "receivers[].url",
        "receivers[].ca_cert",
        "receivers[].ca_sha256",
        "receivers[].ack_key",
        "enrollment.token",
    ]
    .map(String::from)
    .to_vec();
    expected.extend(location.iter().map(|l| format!("location.{l}")));
    expected.extend(
        [
            "hotkey.chords",
            "hotkey.repeat",
            "hotkey.window_ms",
            "hotkey.hold_ms",
            "heartbeat.interval_s",
            "tray.hidden_button_label",
            "tray.hotspot",
            "tray.covert_ack",
            "tray.allow_user_location",
            "tray.allow_quit",
            "help.emergency_number",
            "help.security_phone",
            "help.security_email",
            "help.teams_url",
            "help.text",
            "cancel.label",
            "cancel.chords",
            "cancel.pin_sha256",
            "cancel.duress_pin_sha256",
            "self_test.every_days",
            "self_test.window",
            "network.proxy",
        ]
        .map(String::from),
    );
    assert_eq!(paths, expected);
    let kind = |t: &str, n: &str| schema::find(t, n).unwrap().kind;
    assert_eq!(kind("hotkey", "chords"), Kind::StrList);
    assert_eq!(kind("hotkey", "repeat"), Kind::Int);
    assert_eq!(kind("tray", "covert_ack"), Kind::Bool);
    assert_eq!(kind("cancel", "chords"), Kind::StrList);
    assert_eq!(kind("self_test", "every_days"), Kind::Int);
    assert_eq!(kind("receivers", "url"), Kind::Str);
    assert!(matches!(kind("tray", "hotspot"), Kind::Enum(v) if v.contains(&"bottom-right")));
    assert_eq!(
        schema::tables(),
        [
            ("receivers", true),
            ("enrollment", false),
            ("location", false),
            ("hotkey", false),
            ("heartbeat", false),
            ("tray", false),
            ("help", false),
            ("cancel", false),
            ("self_test", false),
            ("network", false)
        ]
    );
}

/// The example table sets every key to a valid, non-default value (what the format tests
/// compare against).
#[test]
fn example_table_is_a_valid_policy_that_differs_from_the_defaults() {
    let p = every_key_policy();
    let d = Policy::default();
    assert_eq!(p.receivers.len(), 1);
    assert!(p.receivers[0].ca_cert.is_some() && p.receivers[0].ca_sha256.is_some());
    assert!(p.enrollment.token.is_some());
    assert_ne!(p.hotkey, d.hotkey);
    assert_ne!(p.heartbeat, d.heartbeat);
    assert_eq!(p.tray.hotspot, Hotspot::BottomRight);
    assert!(p.tray.covert_ack && p.tray.allow_user_location && p.tray.allow_quit);
    assert!(p.help.text.is_some() && p.network.proxy.is_some());
    assert_eq!(p.location.plc.as_deref(), Some("example PLC"));
}

// ---- the merge -----------------------------------------------------------------------------

/// Tables merge key by key; arrays (receivers, chords) replace as a whole; a higher layer wins.
#[test]
fn merge_overrides_keys_and_replaces_arrays() {
    let mut base = toml_of(
        r#"
        [[receivers]]
        url = "https://a.example"
        [[receivers]]
        url = "https://b.example"
        [location]
        label = "Bldg A"
        BLD = "A"
        [hotkey]
        chords = ["Ctrl+Alt+Shift+D", "F13"]
        repeat = 2
        "#,
    );
    merge(
        &mut base,
        toml_of(
            r#"
            [[receivers]]
            url = "https://c.example"
            [location]
            ROOM = "214"
            [hotkey]
            chords = ["F14"]
            "#,
        ),
    );
    let p = parse_table(&base, "t").unwrap();
    assert_eq!(p.receivers.len(), 1);
    assert_eq!(p.receivers[0].url.as_str(), "https://c.example/");
    assert_eq!(p.location.label.as_deref(), Some("Bldg A"));
    assert_eq!(p.location.room.as_deref(), Some("214"));
    assert_eq!(p.hotkey.chords, ["F14"]);
    assert_eq!(p.hotkey.repeat, 2);
}

// ---- Linux: TOML files ---------------------------------------------------------------------

fn linux_paths(dir: &Path) -> linux::LinuxPaths {
    std::fs::create_dir_all(dir.join("etc/agent.d")).unwrap();
    std::fs::create_dir_all(dir.join("home")).unwrap();
    linux::LinuxPaths {
        etc_dir: dir.join("etc"),
        user: Some(dir.join("home/agent.toml")),
    }
}

/// Every key travels through `/etc/duress/agent.toml`.
#[test]
fn linux_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let paths = linux_paths(dir.path());
    std::fs::write(
        paths.etc_dir.join("agent.toml"),
        toml::to_string(&schema::example_table()).unwrap(),
    )
    .unwrap();
    let loaded = linux::load_from(&paths).unwrap();
    assert_eq!(loaded.policy, every_key_policy());
    assert_eq!(loaded.primary, paths.etc_dir.join("agent.toml"));
}

/// `agent.d/*.toml` override `agent.toml` in name order (not creation order); other files are
/// not read; relative `ca_cert` resolves against the naming file's directory.
#[test]
fn linux_drop_ins_override_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let paths = linux_paths(dir.path());
    let etc = &paths.etc_dir;
    std::fs::write(
        etc.join("agent.toml"),
        "[[receivers]]\nurl = \"https://base.example\"\n[heartbeat]\ninterval_s = 60\n\
         [location]\nlabel = \"Base\"\nBLD = \"A\"\n",
    )
    .unwrap();
    std::fs::write(
        etc.join("agent.d/50-building.toml"),
        "[location]\nlabel = \"Bldg B\"\n[heartbeat]\ninterval_s = 20\n",
    )
    .unwrap();
    std::fs::write(
        etc.join("agent.d/10-site.toml"),
        "[[receivers]]\nurl = \"https://site.example\"\nca_cert = \"site-ca.pem\"\n\
         [heartbeat]\ninterval_s = 30\n",
    )
    .unwrap();
    std::fs::write(etc.join("agent.d/99-ignored.toml.dpkg-old"), "nonsense =").unwrap();
    let loaded = linux::load_from(&paths).unwrap();
    let p = &loaded.policy;
    assert_eq!(p.receivers.len(), 1);
    assert_eq!(p.receivers[0].url.as_str(), "https://site.example/");
    assert_eq!(
        p.receivers[0].ca_cert.as_deref(),
        Some(etc.join("agent.d/site-ca.pem").as_path())
    );
    assert_eq!(p.heartbeat.interval_s, 20);
    assert_eq!(p.location.label.as_deref(), Some("Bldg B"));
    assert_eq!(p.location.bld.as_deref(), Some("A"));
    assert_eq!(loaded.layers.len(), 3);
    assert!(
        loaded.layers[1].ends_with("10-site.toml"),
        "{:?}",
        loaded.layers
    );
}

/// An unknown key in a drop-in is an error naming the key and the file.
#[test]
fn linux_unknown_key_names_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let paths = linux_paths(dir.path());
    std::fs::write(
        paths.etc_dir.join("agent.d/20-x.toml"),
        "[tray]\nhiden_button_label = \"x\"\n",
    )
    .unwrap();
    let e = linux::load_from(&paths).unwrap_err().to_string();
    assert!(
        e.contains("hiden_button_label") && e.contains("20-x.toml"),
        "{e}"
    );
}

/// The user's file cannot redirect alarms: its receiver (and anything but the location) is
/// ignored and logged by name; its location counts only while policy allows it.
#[test]
fn linux_user_layer_is_filtered_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let paths = linux_paths(dir.path());
    let user = paths.user.clone().unwrap();
    std::fs::write(
        paths.etc_dir.join("agent.toml"),
        "[[receivers]]\nurl = \"https://it.example\"\n[location]\nlabel = \"IT's room\"\n",
    )
    .unwrap();
    std::fs::write(
        &user,
        "[[receivers]]\nurl = \"https://evil.example\"\n[tray]\nallow_quit = true\n\
         [location]\nlabel = \"Hot desk 7\"\n",
    )
    .unwrap();
    let (loaded, log) = with_log(|| linux::load_from(&paths).unwrap());
    assert_eq!(
        loaded.policy.receivers[0].url.as_str(),
        "https://it.example/"
    );
    assert!(!loaded.policy.tray.allow_quit);
    assert_eq!(loaded.policy.location.label.as_deref(), Some("IT's room"));
    assert!(log.contains("receivers[0].url"), "{log}");
    assert!(log.contains("tray.allow_quit"), "{log}");
    assert!(log.contains("location.label"), "{log}");
    assert!(log.contains("user setting ignored"), "{log}");
    assert_eq!(loaded.ignored.len(), 3, "{:?}", loaded.ignored);

    // Policy allows hot desks: the user's location replaces the machine's as a whole.
    std::fs::write(
        paths.etc_dir.join("agent.d/10-hotdesk.toml"),
        "[tray]\nallow_user_location = true\n",
    )
    .unwrap();
    let loaded = linux::load_from(&paths).unwrap();
    assert_eq!(loaded.policy.location.label.as_deref(), Some("Hot desk 7"));
    assert_eq!(
        loaded.policy.receivers[0].url.as_str(),
        "https://it.example/"
    );
    assert_eq!(loaded.ignored.len(), 2, "{:?}", loaded.ignored);

    // A broken user file never stops the agent.
    std::fs::write(&user, "this is = = not toml").unwrap();
    let loaded = linux::load_from(&paths).unwrap();
    assert_eq!(loaded.policy.location.label.as_deref(), Some("IT's room"));
}

/// No file anywhere: an empty policy, as before.
#[test]
fn linux_nothing_configured_is_an_empty_policy() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = linux::load_from(&linux_paths(dir.path())).unwrap();
    assert_eq!(loaded.policy, Policy::default());
    assert!(loaded.layers.is_empty());
}

// ---- Windows: the registry (in memory) -----------------------------------------------------

/// Writes `table` into the registry under `root` with the documented mapping.
fn write_registry(reg: &mut MemoryRegistry, hive: Hive, root: &str, table: &toml::Table) {
    for (t, v) in table {
        match v {
            toml::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    for (k, v) in item.as_table().unwrap() {
                        reg.set(hive, &format!(r"{root}\{t}\{i}"), k, to_reg(v));
                    }
                }
            }
            toml::Value::Table(kv) => {
                for (k, v) in kv {
                    reg.set(hive, &format!(r"{root}\{t}"), k, to_reg(v));
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn to_reg(v: &toml::Value) -> RegValue {
    match v {
        toml::Value::String(s) => RegValue::Sz(s.clone()),
        toml::Value::Integer(n) => RegValue::Dword(u32::try_from(*n).unwrap()),
        toml::Value::Boolean(b) => RegValue::Dword(u32::from(*b)),
        toml::Value::Array(a) => RegValue::Sz(
            a.iter()
                .map(|s| s.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(";"),
        ),
        other => panic!("unexpected {other:?}"),
    }
}

/// Every key travels through the registry (REG_SZ, REG_DWORD, `;`-separated chords), in the
/// policy key and in the installer's key alike.
#[test]
fn windows_every_key() {
    for root in [windows::POLICY_KEY, windows::MACHINE_KEY] {
        let mut reg = MemoryRegistry::new();
        write_registry(&mut reg, Hive::LocalMachine, root, &schema::example_table());
        let loaded = windows::load_from(&reg).unwrap();
        assert_eq!(loaded.policy, every_key_policy(), "{root}");
        assert_eq!(loaded.layers, [format!(r"HKLM\{root}")]);
    }
}

/// `HKLM\SOFTWARE\Policies\Duress\Agent` (GPO/Intune) beats `HKLM\SOFTWARE\Duress\Agent` (the
/// MSI) key by key; the receivers list is replaced as a whole; names match ignoring case;
/// receivers are taken in numeric order of their subkeys.
#[test]
fn windows_policy_key_beats_installer_key() {
    let mut reg = MemoryRegistry::new();
    let hklm = Hive::LocalMachine;
    let m = windows::MACHINE_KEY;
    let p = windows::POLICY_KEY;
    reg.set(
        hklm,
        &format!(r"{m}\receivers\0"),
        "url",
        RegValue::Sz("https://msi-a.example".into()),
    )
    .set(
        hklm,
        &format!(r"{m}\receivers\1"),
        "url",
        RegValue::Sz("https://msi-b.example".into()),
    )
    .set(
        hklm,
        &format!(r"{m}\location"),
        "label",
        RegValue::Sz("MSI label".into()),
    )
    .set(
        hklm,
        &format!(r"{m}\location"),
        "BLD",
        RegValue::Sz("A".into()),
    )
    .set(
        hklm,
        &format!(r"{m}\heartbeat"),
        "interval_s",
        RegValue::Sz("45".into()),
    )
    .set(
        hklm,
        &format!(r"{p}\Receivers\10"),
        "URL",
        RegValue::Sz("https://gpo-10.example".into()),
    )
    .set(
        hklm,
        &format!(r"{p}\Receivers\2"),
        "URL",
        RegValue::Sz("https://gpo-2.example".into()),
    )
    .set(
        hklm,
        &format!(r"{p}\Location"),
        "Label",
        RegValue::Sz("GPO label".into()),
    )
    .set(
        hklm,
        &format!(r"{p}\tray"),
        "allow_quit",
        RegValue::Dword(1),
    );
    let loaded = windows::load_from(&reg).unwrap();
    let pol = &loaded.policy;
    let urls: Vec<&str> = pol.receivers.iter().map(|r| r.url.as_str()).collect();
    assert_eq!(urls, ["https://gpo-2.example/", "https://gpo-10.example/"]);
    assert_eq!(pol.location.label.as_deref(), Some("GPO label"));
    assert_eq!(pol.location.bld.as_deref(), Some("A"));
    assert_eq!(pol.heartbeat.interval_s, 45);
    assert!(pol.tray.allow_quit);
    assert_eq!(loaded.layers, [format!(r"HKLM\{m}"), format!(r"HKLM\{p}")]);
}

/// Exactly what the MSI writes: strings for every property, empty ones for properties not
/// given (an empty value is "not set"), chords `;`-separated.
#[test]
fn windows_msi_layout_parses() {
    let mut reg = MemoryRegistry::new();
    let hklm = Hive::LocalMachine;
    let m = windows::MACHINE_KEY;
    let pin = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";
    reg.set(
        hklm,
        &format!(r"{m}\receivers\0"),
        "url",
        RegValue::Sz("https://duress.example.edu:8443".into()),
    )
    .set(
        hklm,
        &format!(r"{m}\receivers\0"),
        "ca_sha256",
        RegValue::Sz(pin.into()),
    )
    .set(
        hklm,
        &format!(r"{m}\enrollment"),
        "token",
        RegValue::Sz("det_123".into()),
    )
    .set(
        hklm,
        &format!(r"{m}\location"),
        "label",
        RegValue::Sz("Bldg A, Floor 2, Room 214".into()),
    )
    .set(
        hklm,
        &format!(r"{m}\location"),
        "BLD",
        RegValue::Sz("A".into()),
    )
    .set(
        hklm,
        &format!(r"{m}\location"),
        "FLR",
        RegValue::Sz(String::new()),
    )
    .set(
        hklm,
        &format!(r"{m}\location"),
        "ROOM",
        RegValue::Sz("214".into()),
    )
    .set(
        hklm,
        &format!(r"{m}\hotkey"),
        "chords",
        RegValue::Sz("Ctrl+Alt+Shift+D; F13".into()),
    );
    let p = windows::load_from(&reg).unwrap().policy;
    assert_eq!(p.receivers[0].ca_sha256.as_deref(), Some(pin));
    assert_eq!(p.enrollment.token.unwrap().expose(), "det_123");
    assert_eq!(p.location.flr, None);
    assert_eq!(p.location.room.as_deref(), Some("214"));
    assert_eq!(p.hotkey.chords, ["Ctrl+Alt+Shift+D", "F13"]);

    // An MSI installed with no property at all leaves only empty values: an empty policy.
    let mut reg = MemoryRegistry::new();
    reg.set(
        hklm,
        &format!(r"{m}\receivers\0"),
        "url",
        RegValue::Sz(String::new()),
    )
    .set(
        hklm,
        &format!(r"{m}\hotkey"),
        "chords",
        RegValue::Sz(String::new()),
    );
    assert_eq!(windows::load_from(&reg).unwrap().policy, Policy::default());
}

/// An unknown value, subkey or bad type is an error naming the key path it is in.
#[test]
fn windows_unknown_keys_name_the_registry_path() {
    let hklm = Hive::LocalMachine;
    let p = windows::POLICY_KEY;
    let cases: Vec<(MemoryRegistry, &str)> = vec![
        {
            let mut r = MemoryRegistry::new();
            r.set(
                hklm,
                &format!(r"{p}\tray"),
                "hiden_button_label",
                RegValue::Sz("x".into()),
            );
            (
                r,
                r"HKLM\SOFTWARE\Policies\Duress\Agent\tray: unknown key hiden_button_label",
            )
        },
        {
            let mut r = MemoryRegistry::new();
            r.set(
                hklm,
                &format!(r"{p}\trays"),
                "allow_quit",
                RegValue::Dword(1),
            );
            (r, r"HKLM\SOFTWARE\Policies\Duress\Agent: unknown key trays")
        },
        {
            let mut r = MemoryRegistry::new();
            r.set(hklm, p, "url", RegValue::Sz("https://x".into()));
            (r, r"HKLM\SOFTWARE\Policies\Duress\Agent: unknown key url")
        },
        {
            let mut r = MemoryRegistry::new();
            r.set(
                hklm,
                &format!(r"{p}\receivers\first"),
                "url",
                RegValue::Sz("https://x".into()),
            );
            (r, "numbered subkeys")
        },
        {
            let mut r = MemoryRegistry::new();
            r.set(
                hklm,
                &format!(r"{p}\heartbeat"),
                "interval_s",
                RegValue::Other("REG_BINARY".into()),
            );
            (
                r,
                r"HKLM\SOFTWARE\Policies\Duress\Agent\heartbeat: interval_s must be an integer",
            )
        },
        {
            let mut r = MemoryRegistry::new();
            r.set(
                hklm,
                &format!(r"{p}\heartbeat"),
                "interval_s",
                RegValue::Dword(5),
            );
            (
                r,
                r"policy HKLM\SOFTWARE\Policies\Duress\Agent: heartbeat.interval_s",
            )
        },
    ];
    for (reg, needle) in cases {
        let e = windows::load_from(&reg).unwrap_err().to_string();
        assert!(e.contains(needle), "{e}\n  should contain {needle}");
    }
}

/// `HKCU\Software\Duress\Agent` cannot redirect alarms: a user receiver URL is ignored and
/// logged; the user's location counts only while policy allows hot desks.
#[test]
fn windows_user_receiver_is_ignored_and_logged() {
    let mut reg = MemoryRegistry::new();
    let hklm = Hive::LocalMachine;
    let hkcu = Hive::CurrentUser;
    let u = windows::USER_KEY;
    reg.set(
        hklm,
        &format!(r"{}\receivers\0", windows::POLICY_KEY),
        "url",
        RegValue::Sz("https://it.example".into()),
    )
    .set(
        hkcu,
        &format!(r"{u}\receivers\0"),
        "url",
        RegValue::Sz("https://evil.example".into()),
    )
    .set(
        hkcu,
        &format!(r"{u}\location"),
        "label",
        RegValue::Sz("Hot desk 7".into()),
    )
    .set(hkcu, &format!(r"{u}\whatever"), "x", RegValue::Dword(1));
    let (loaded, log) = with_log(|| windows::load_from(&reg).unwrap());
    assert_eq!(loaded.policy.receivers.len(), 1);
    assert_eq!(
        loaded.policy.receivers[0].url.as_str(),
        "https://it.example/"
    );
    assert_eq!(loaded.policy.location.label, None);
    assert!(log.contains(r"HKCU\Software\Duress\Agent"), "{log}");
    assert!(log.contains("receivers[0].url"), "{log}");
    assert!(log.contains("location.label"), "{log}");
    assert!(log.contains("whatever"), "{log}");

    reg.set(
        hklm,
        &format!(r"{}\tray", windows::POLICY_KEY),
        "allow_user_location",
        RegValue::Dword(1),
    );
    let loaded = windows::load_from(&reg).unwrap();
    assert_eq!(loaded.policy.location.label.as_deref(), Some("Hot desk 7"));
    assert_eq!(
        loaded.policy.receivers[0].url.as_str(),
        "https://it.example/"
    );
}

/// The help e-mail set by GPO is what the tray's "not enrolled — contact …" line names.
#[test]
fn help_email_from_policy_reaches_the_status_line() {
    let mut reg = MemoryRegistry::new();
    reg.set(
        Hive::LocalMachine,
        &format!(r"{}\help", windows::POLICY_KEY),
        "security_email",
        RegValue::Sz("security@metrostate.edu".into()),
    );
    let p = windows::load_from(&reg).unwrap().policy;
    assert_eq!(crate::status_line::contact(&p), "security@metrostate.edu");
}

// ---- macOS: plists -------------------------------------------------------------------------

fn to_plist(v: &toml::Value) -> plist::Value {
    match v {
        toml::Value::String(s) => plist::Value::String(s.clone()),
        toml::Value::Integer(n) => plist::Value::Integer((*n).into()),
        toml::Value::Boolean(b) => plist::Value::Boolean(*b),
        toml::Value::Array(a) => plist::Value::Array(a.iter().map(to_plist).collect()),
        toml::Value::Table(t) => {
            plist::Value::Dictionary(t.iter().map(|(k, v)| (k.clone(), to_plist(v))).collect())
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn mac_paths(dir: &Path) -> MacPaths {
    MacPaths {
        machine: dir.join("Library/Preferences/org.duress.agent.plist"),
        managed: dir.join("Library/Managed Preferences/org.duress.agent.plist"),
        managed_user: Some(dir.join("Library/Managed Preferences/alice/org.duress.agent.plist")),
        user: Some(dir.join("Users/alice/Library/Preferences/org.duress.agent.plist")),
    }
}

fn write_plist(path: &Path, table: &toml::Table, binary: bool) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let v = to_plist(&toml::Value::Table(table.clone()));
    if binary {
        v.to_file_binary(path).unwrap();
    } else {
        v.to_file_xml(path).unwrap();
    }
}

/// Every key travels through a managed-preferences plist, XML or binary (macOS writes binary).
#[test]
fn macos_every_key() {
    for binary in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let paths = mac_paths(dir.path());
        write_plist(&paths.managed, &schema::example_table(), binary);
        let loaded = macos::load_from(&paths).unwrap();
        assert_eq!(loaded.policy, every_key_policy());
    }
}

/// Managed preferences beat `/Library/Preferences`, user-scoped managed preferences beat
/// device-scoped ones; profile bookkeeping keys (`Payload…`) are skipped; chords may be one
/// `;`-separated string.
#[test]
fn macos_managed_beats_machine_config() {
    let dir = tempfile::tempdir().unwrap();
    let paths = mac_paths(dir.path());
    write_plist(
        &paths.machine,
        &toml_of(
            "[[receivers]]\nurl = \"https://pkg.example\"\n[location]\nBLD = \"A\"\nlabel = \"pkg\"\n[hotkey]\nchords = \"F13;F14\"\n",
        ),
        false,
    );
    write_plist(
        &paths.managed,
        &toml_of(
            "PayloadUUID = \"x\"\n[[receivers]]\nurl = \"https://mdm.example\"\n[location]\nlabel = \"mdm\"\n",
        ),
        true,
    );
    write_plist(
        paths.managed_user.as_ref().unwrap(),
        &toml_of("[location]\nROOM = \"214\"\n"),
        false,
    );
    let p = macos::load_from(&paths).unwrap().policy;
    assert_eq!(p.receivers[0].url.as_str(), "https://mdm.example/");
    assert_eq!(p.location.label.as_deref(), Some("mdm"));
    assert_eq!(p.location.bld.as_deref(), Some("A"));
    assert_eq!(p.location.room.as_deref(), Some("214"));
    assert_eq!(p.hotkey.chords, ["F13", "F14"]);
}

/// An unknown key in a managed plist names the key and the file; the user's plist cannot set a
/// receiver (ignored and logged).
#[test]
fn macos_unknown_key_and_user_layer() {
    let dir = tempfile::tempdir().unwrap();
    let paths = mac_paths(dir.path());
    write_plist(
        &paths.managed,
        &toml_of("[tray]\nhiden_button_label = \"x\"\n"),
        false,
    );
    let e = macos::load_from(&paths).unwrap_err().to_string();
    assert!(
        e.contains("tray: unknown key hiden_button_label") && e.contains("Managed Preferences"),
        "{e}"
    );
    write_plist(
        &paths.managed,
        &toml_of("[[receivers]]\nurl = \"https://it.example\"\n"),
        false,
    );
    write_plist(
        paths.user.as_ref().unwrap(),
        &toml_of("[[receivers]]\nurl = \"https://evil.example\"\n"),
        false,
    );
    let (loaded, log) = with_log(|| macos::load_from(&paths).unwrap());
    assert_eq!(
        loaded.policy.receivers[0].url.as_str(),
        "https://it.example/"
    );
    assert!(
        log.contains("receivers[0].url") && log.contains("user setting ignored"),
        "{log}"
    );
}
