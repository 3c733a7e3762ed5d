//! The installers, built here and read back with the tools IT's platforms use: the MSI with
//! wixl/msitools, the .deb with dpkg-deb, the macOS scripts with shellcheck and the plists with
//! python3's plistlib, the ADMX/ADML with xmllint. "Every policy key" always means the list read
//! from the `Policy` type itself (`duress_agent_core::policy::sources::keys()`), so a key added
//! to the schema without installer support fails here.
//!
//! Tools (Debian packages, listed in scripts/install-deps): wixl, msitools, dpkg, shellcheck,
//! libxml2-utils, python3. A missing one fails the test and names the package.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use duress_agent_core::Policy;
use duress_agent_core::policy::sources::{self, Key, keys, macos, schema};

/// The MSI's public properties and where each is written (subkey of HKLM\SOFTWARE\Duress\Agent,
/// value name): the same names as the TOML schema.
const MSI_PROPERTIES: [(&str, &str, &str); 9] = [
    ("RECEIVER_URL", r"receivers\0", "url"),
    ("RECEIVER_CA_SHA256", r"receivers\0", "ca_sha256"),
    ("RECEIVER_ACK_KEY", r"receivers\0", "ack_key"),
    ("ENROLL_TOKEN", "enrollment", "token"),
    ("LOCATION_LABEL", "location", "label"),
    ("LOCATION_BUILDING", "location", "BLD"),
    ("LOCATION_FLOOR", "location", "FLR"),
    ("LOCATION_ROOM", "location", "ROOM"),
    ("HOTKEY", "hotkey", "chords"),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Fails loudly when `tool` is missing, naming the Debian package.
fn require(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "\n\n*** {tool} is not installed: apt-get install {package} (scripts/install-deps lists it)\n"
    );
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `installers/build.sh ARGS` with artefacts in `out`; returns the artefact path (last line).
fn build(args: &[&str], out: &Path, env: &[(&str, &Path)]) -> PathBuf {
    let mut cmd = Command::new(repo().join("installers/build.sh"));
    cmd.args(args).env("DURESS_INSTALLERS_OUT", out);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let stdout = run(&mut cmd);
    PathBuf::from(stdout.lines().last().unwrap().trim())
}

/// One MSI table as rows of named columns (`msiinfo export`).
fn msi_table(msi: &Path, table: &str) -> Vec<BTreeMap<String, String>> {
    let text = run(Command::new("msiinfo").arg("export").arg(msi).arg(table));
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split('\t')
        .map(str::to_owned)
        .collect();
    // Line 2 holds the column types, line 3 the table name and keys.
    lines
        .skip(2)
        .filter(|l| !l.is_empty())
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(
                    l.split('\t')
                        .map(str::to_owned)
                        .chain(std::iter::repeat(String::new())),
                )
                .collect()
        })
        .collect()
}

fn property(rows: &[BTreeMap<String, String>], name: &str) -> Option<String> {
    rows.iter()
        .find(|r| r["Property"] == name)
        .map(|r| r["Value"].clone())
}

fn msi_tools() {
    require("wixl", "wixl");
    require("msiinfo", "msitools");
    require("msibuild", "msitools");
}

/// The MSI, built with wixl around a placeholder (the tables are what matter): per-machine;
/// each public property declared (remembered through AppSearch), secure, and written under HKLM
/// (Root 2) from `[PROPERTY]` to the value the agent's schema names; the token hidden from logs;
/// autostart for every user through HKLM Run; no desktop shortcut; MajorUpgrade's Upgrade rows.
#[test]
fn msi_tables() {
    msi_tools();
    let out = tempfile::tempdir().unwrap();
    let msi = build(&["msi", "--placeholder"], out.path(), &[]);
    assert!(
        msi.file_name()
            .unwrap()
            .to_string_lossy()
            .contains("PLACEHOLDER"),
        "{}",
        msi.display()
    );

    let props = msi_table(&msi, "Property");
    assert_eq!(
        property(&props, "ALLUSERS").as_deref(),
        Some("1"),
        "per-machine"
    );
    let secure = property(&props, "SecureCustomProperties").expect("SecureCustomProperties");
    let secure: Vec<&str> = secure.split(';').collect();
    let hidden = property(&props, "MsiHiddenProperties").expect("MsiHiddenProperties");
    assert!(hidden.split(';').any(|p| p == "ENROLL_TOKEN"), "{hidden}");
    assert!(
        hidden.split(';').any(|p| p == "CMDLINE_ENROLL_TOKEN"),
        "{hidden}"
    );

    let appsearch = msi_table(&msi, "AppSearch");
    let reglocator = msi_table(&msi, "RegLocator");
    let registry = msi_table(&msi, "Registry");
    for (prop, subkey, name) in MSI_PROPERTIES {
        assert!(
            secure.contains(&prop),
            "{prop} not in SecureCustomProperties"
        );
        // Declared and remembered: AppSearch reads it back from where the MSI writes it.
        let search = appsearch
            .iter()
            .find(|r| r["Property"] == prop)
            .unwrap_or_else(|| panic!("{prop} has no AppSearch row"));
        let loc = reglocator
            .iter()
            .find(|r| r["Signature_"] == search["Signature_"])
            .unwrap();
        let key = format!(r"SOFTWARE\Duress\Agent\{subkey}");
        assert_eq!(
            (
                loc["Root"].as_str(),
                loc["Key"].as_str(),
                loc["Name"].as_str()
            ),
            ("2", key.as_str(), name)
        );
        // Written under HKLM from the property.
        let row = registry
            .iter()
            .find(|r| r["Value"] == format!("[{prop}]"))
            .unwrap_or_else(|| panic!("no Registry row writes [{prop}]"));
        assert_eq!(row["Root"], "2", "{prop}: HKLM");
        assert_eq!(row["Key"], key, "{prop}");
        assert_eq!(row["Name"], name, "{prop}");
        // ... to a value the agent reads: a key of the schema.
        let table = subkey.split('\\').next().unwrap();
        assert!(
            schema::find_ignore_case(table, name).is_some(),
            "{prop} writes {subkey}\\{name}, which is not a policy key"
        );
    }

    let run_key = registry
        .iter()
        .find(|r| r["Key"] == r"SOFTWARE\Microsoft\Windows\CurrentVersion\Run")
        .expect("an HKLM Run value");
    assert_eq!(run_key["Root"], "2");
    // The name the tray's autostart module looks for before writing a per-user entry.
    assert_eq!(run_key["Name"], "Duress");
    assert!(run_key["Value"].contains("duress-agent.exe"), "{run_key:?}");

    let shortcuts = msi_table(&msi, "Shortcut");
    assert!(
        shortcuts.iter().all(|r| r["Directory_"] != "DesktopFolder"),
        "{shortcuts:?}"
    );
    let upgrade = msi_table(&msi, "Upgrade");
    assert!(
        upgrade
            .iter()
            .any(|r| r["UpgradeCode"] == "{6C1F3A52-2F0E-4C5B-9A57-5B0B8D3C1E01}"),
        "{upgrade:?}"
    );
    let files = msi_table(&msi, "File");
    assert!(
        files
            .iter()
            .any(|r| r["FileName"].ends_with("duress-agent.exe")),
        "{files:?}"
    );
    // Uninstall (not an upgrade) retires the station first, as the uninstalling user,
    // best-effort (issue 21: deferred 0x400, continue 0x40, never noImpersonate 0x800).
    let actions = msi_table(&msi, "CustomAction");
    let retire = actions
        .iter()
        .find(|r| r["Action"] == "DecommissionStation")
        .unwrap_or_else(|| panic!("no DecommissionStation: {actions:?}"));
    let t: u32 = retire["Type"].parse().unwrap();
    assert!(
        t & 0x400 != 0 && t & 0x40 != 0 && t & 0x800 == 0,
        "{retire:?}"
    );
    assert!(
        retire["Target"].contains("duress-agent.exe\" decommission"),
        "{retire:?}"
    );
    let sequence = msi_table(&msi, "InstallExecuteSequence");
    let step = sequence
        .iter()
        .find(|r| r["Action"] == "DecommissionStation")
        .unwrap();
    assert_eq!(
        step["Condition"],
        "REMOVE~=\"ALL\" AND NOT UPGRADINGPRODUCTCODE"
    );
    let at = |a: &str| -> u32 {
        sequence.iter().find(|r| r["Action"] == a).unwrap()["Sequence"]
            .parse()
            .unwrap()
    };
    assert!(at("DecommissionStation") < at("DeleteScheduledTask"));
    // The token's copies run with msidbCustomActionTypeHideTarget.
    for r in msi_table(&msi, "CustomAction") {
        if r["Action"].ends_with("ENROLL_TOKEN") {
            let t: u32 = r["Type"].parse().unwrap();
            assert!(t & 0x2000 != 0, "{r:?}");
        }
    }
}

/// With a fixed WebView2 runtime folder, the MSI carries its files and points the agent at them
/// with the WebView2 BrowserExecutableFolder policy (nothing downloaded at install time).
#[test]
fn msi_with_fixed_webview2_runtime() {
    msi_tools();
    require("wixl-heat", "wixl");
    let out = tempfile::tempdir().unwrap();
    let runtime = out.path().join("fixed-runtime");
    std::fs::create_dir_all(runtime.join("EBWebView")).unwrap();
    std::fs::write(runtime.join("msedgewebview2.exe"), "fake").unwrap();
    std::fs::write(runtime.join("EBWebView/x.dll"), "fake").unwrap();
    let msi = build(
        &["msi", "--placeholder"],
        out.path(),
        &[("WEBVIEW2_FIXED_RUNTIME_DIR", &runtime)],
    );
    let files = msi_table(&msi, "File");
    assert!(
        files
            .iter()
            .any(|r| r["FileName"].ends_with("msedgewebview2.exe")),
        "{files:?}"
    );
    let registry = msi_table(&msi, "Registry");
    assert!(
        registry
            .iter()
            .any(|r| r["Key"].ends_with(r"WebView2\BrowserExecutableFolder")
                && r["Name"] == "duress-agent.exe"
                && r["Value"] == "[WEBVIEW2DIR]"),
        "{registry:?}"
    );
}

/// The .deb: Depends names the runtime libraries; it installs the binary (which runs), the
/// autostart entry and the example policy, and no /etc/duress/agent.toml; its postinst (run
/// with DPKG_ROOT on the extracted tree) keeps an existing policy byte for byte and, on a first
/// install, writes a fully commented one that is a valid (empty) policy.
#[test]
fn deb_package() {
    require("dpkg-deb", "dpkg");
    let agent = duress_tests::bin("duress-agent");
    let out = tempfile::tempdir().unwrap();
    // The debug binary is large: pack it fast (releases keep dpkg-deb's default xz).
    let deb = build(
        &["deb", "--no-build"],
        out.path(),
        &[
            ("DURESS_AGENT_BIN", &agent),
            ("DPKG_DEB_COMPRESSOR_TYPE", Path::new("gzip")),
            ("DPKG_DEB_COMPRESSOR_LEVEL", Path::new("1")),
        ],
    );

    let info = run(Command::new("dpkg-deb").arg("-I").arg(&deb));
    let depends = info
        .lines()
        .find(|l| l.trim_start().starts_with("Depends:"))
        .unwrap_or_else(|| panic!("no Depends in:\n{info}"));
    for lib in ["libayatana-appindicator3-1", "libwebkit2gtk-4.1-0"] {
        assert!(depends.contains(lib), "{depends}");
    }

    let root = out.path().join("root");
    let control = out.path().join("control");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let bin = root.join("usr/bin/duress-agent");
    assert!(bin.is_file());
    let version = run(Command::new(&bin).arg("--version"));
    assert!(
        version.contains(duress_agent_core::AGENT_VERSION),
        "{version}"
    );
    let desktop =
        std::fs::read_to_string(root.join("etc/xdg/autostart/duress-agent.desktop")).unwrap();
    assert!(desktop.contains("Exec=/usr/bin/duress-agent"), "{desktop}");
    assert!(root.join("etc/duress/agent.toml.example").is_file());
    assert!(
        !root.join("etc/duress/agent.toml").exists(),
        "the policy itself is never shipped"
    );
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert!(
        conffiles.contains("/etc/duress/agent.toml.example"),
        "{conffiles}"
    );

    let postinst = control.join("postinst");
    let run_postinst = || {
        run(Command::new("sh")
            .arg(&postinst)
            .arg("configure")
            .env("DPKG_ROOT", &root))
    };
    // An existing policy is kept as it is.
    let policy = root.join("etc/duress/agent.toml");
    let mine = "[[receivers]]\nurl = \"https://mine.example\"\n";
    std::fs::write(&policy, mine).unwrap();
    run_postinst();
    assert_eq!(std::fs::read_to_string(&policy).unwrap(), mine);
    // First install: a commented-out policy, valid and empty.
    std::fs::remove_file(&policy).unwrap();
    run_postinst();
    let written = std::fs::read_to_string(&policy).unwrap();
    assert!(
        written.lines().all(|l| l.is_empty() || l.starts_with('#')),
        "{written}"
    );
    assert_eq!(
        Policy::from_toml_str(&written, "postinst").unwrap(),
        Policy::default()
    );
    assert!(root.join("etc/duress/agent.d").is_dir());

    // prerm retires the station on remove only, and never runs anything into a --root tree.
    let prerm = std::fs::read_to_string(control.join("prerm")).unwrap();
    assert!(
        prerm.contains("/usr/bin/duress-agent decommission"),
        "{prerm}"
    );
    for arg in ["upgrade", "remove"] {
        run(Command::new("sh")
            .arg(control.join("prerm"))
            .arg(arg)
            .env("DPKG_ROOT", &root));
    }
}

/// The receiver's .deb (issue 21): installed with dpkg into a throw-away root (its own dpkg
/// database; maintainer scripts run with DPKG_ROOT), the installed binary runs, the unit passes
/// `systemd-analyze verify` and scores as well hardened in `systemd-analyze security`, postinst
/// made the 0700 data directory and the 0640 secrets file (kept on reinstall), enabled nothing,
/// and the default configuration is a conffile.
#[test]
fn receiver_deb_package() {
    require("dpkg-deb", "dpkg");
    require("systemd-analyze", "systemd");
    let receiver = duress_tests::bin("duress-receiver");
    let out = tempfile::tempdir().unwrap();
    let deb = build(
        &["deb-receiver", "--no-build"],
        out.path(),
        &[
            ("DURESS_RECEIVER_BIN", &receiver),
            ("DPKG_DEB_COMPRESSOR_TYPE", Path::new("gzip")),
            ("DPKG_DEB_COMPRESSOR_LEVEL", Path::new("1")),
        ],
    );
    let control = out.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/duress/receiver.toml");

    let root = out.path().join("root");
    let install = || {
        std::fs::create_dir_all(root.join("var/lib/dpkg/info")).unwrap();
        std::fs::create_dir_all(root.join("var/lib/dpkg/updates")).unwrap();
        if !root.join("var/lib/dpkg/status").exists() {
            std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
        }
        // --force-depends: the throw-away root has no libc6/adduser packages registered.
        run(Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args([
                "--force-depends",
                "--force-script-chrootless",
                "--log=/dev/null",
                "-i",
            ])
            .arg(&deb));
    };
    install();
    let version = run(Command::new(root.join("usr/bin/duress-receiver")).arg("--version"));
    assert!(version.starts_with("duress-receiver "), "{version}");

    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &str| {
        std::fs::metadata(root.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("var/lib/duress-receiver"), 0o700);
    assert_eq!(mode("etc/duress/receiver.env"), 0o640);
    // The secrets file is the administrator's once written: a reinstall keeps it.
    let env_file = root.join("etc/duress/receiver.env");
    std::fs::write(&env_file, "DURESS_DATABASE_URL=postgres://mine@/db\n").unwrap();
    install();
    assert_eq!(
        std::fs::read_to_string(&env_file).unwrap(),
        "DURESS_DATABASE_URL=postgres://mine@/db\n"
    );
    // Nothing unconfigured is started or enabled.
    assert!(
        !root
            .join("etc/systemd/system/multi-user.target.wants")
            .exists()
    );

    // The unit as installed, pointed at the installed binary (verify checks that ExecStart
    // exists and is executable on this machine).
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/duress-receiver.service"))
        .unwrap();
    for line in [
        "User=duress-receiver",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/duress-receiver",
        "NoNewPrivileges=yes",
        "Restart=always",
        "LimitNOFILE=",
        "--config /etc/duress/receiver.toml",
    ] {
        assert!(unit.contains(line), "the unit lacks {line:?}:\n{unit}");
    }
    let check = out.path().join("verify");
    std::fs::create_dir_all(&check).unwrap();
    let installed_bin = root.join("usr/bin/duress-receiver");
    std::fs::write(
        check.join("duress-receiver.service"),
        unit.replace("/usr/bin/duress-receiver", installed_bin.to_str().unwrap()),
    )
    .unwrap();
    let unit_path = check.join("duress-receiver.service");
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit_path)
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit_path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&security.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| {
            l.split("exposure level for duress-receiver.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    println!("receiver_deb_package: systemd-analyze security exposure {exposure}");
    assert!(
        exposure <= 2.5,
        "exposure {exposure} (at most 2.5, \"OK\"):\n{text}"
    );
}

/// The example policy the .deb installs is a valid policy that sets every key of the schema.
#[test]
fn toml_example_has_every_key() {
    let text = std::fs::read_to_string(repo().join("installers/linux/agent.toml.example")).unwrap();
    Policy::from_toml_str(&text, "agent.toml.example").unwrap();
    let table: toml_table::Table = text.parse().unwrap();
    assert_every_key(&table, "agent.toml.example");
}

/// The Tauri bundler settings carry the same Depends and the same files as the .deb built here.
#[test]
fn tauri_bundle_matches_the_deb() {
    let conf: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("src-tauri/tauri.conf.json")).unwrap(),
    )
    .unwrap();
    let deb = &conf["bundle"]["linux"]["deb"];
    let depends: Vec<&str> = deb["depends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let script = std::fs::read_to_string(repo().join("installers/linux/build-deb.sh")).unwrap();
    let line = script.lines().find(|l| l.starts_with("Depends:")).unwrap();
    assert_eq!(line, format!("Depends: {}", depends.join(", ")));
    for (target, source) in deb["files"].as_object().unwrap() {
        assert!(
            repo()
                .join("src-tauri")
                .join(source.as_str().unwrap())
                .is_file(),
            "{target} <- {source}"
        );
    }
    assert!(
        repo()
            .join("src-tauri")
            .join(deb["postInstallScript"].as_str().unwrap())
            .is_file()
    );
}

/// The macOS scripts pass shellcheck (`installers/build.sh pkg-scripts`); the LaunchAgent and
/// the .mobileconfig parse as plists; the profile's payload is for the managed domain, carries
/// every policy key and, read by the agent's own macOS parser, is a valid policy.
#[test]
fn macos_scripts_and_plists() {
    require("shellcheck", "shellcheck");
    require("python3", "python3");
    let out = tempfile::tempdir().unwrap();
    let staged = build(&["pkg-scripts"], out.path(), &[]);
    assert!(staged.join("scripts/postinstall").is_file());

    let dir = repo().join("installers/macos");
    let payload = out.path().join("payload.plist");
    let script = r#"
import plistlib, sys
agent = plistlib.load(open(sys.argv[1], 'rb'))
assert agent['Label'] == 'org.duress.agent', agent
assert agent['ProgramArguments'][0].endswith('/duress-agent'), agent
assert agent['RunAtLoad'] is True
profile = plistlib.load(open(sys.argv[2], 'rb'))
assert profile['PayloadType'] == 'Configuration'
[p] = [p for p in profile['PayloadContent'] if p['PayloadType'] == 'org.duress.agent']
plistlib.dump(p, open(sys.argv[3], 'wb'))
"#;
    run(Command::new("python3")
        .args(["-c", script])
        .arg(dir.join("LaunchAgents/org.duress.agent.plist"))
        .arg(dir.join("org.duress.agent.mobileconfig"))
        .arg(&payload));
    let layer = macos::read_plist_layer(&payload).unwrap().unwrap();
    assert_every_key(&layer.table, "org.duress.agent.mobileconfig");
    sources::parse_table(&layer.table, "mobileconfig payload").unwrap();
    // The postinstall bootstraps the LaunchAgent for the console user.
    let post = std::fs::read_to_string(dir.join("scripts/postinstall")).unwrap();
    assert!(post.contains("launchctl bootstrap \"gui/$uid\""), "{post}");
}

/// The ADMX and ADML are well-formed; every policy key of the schema has a policy writing it
/// under Software\Policies\Duress\Agent\<table> (receivers: \receivers\<n>) with its own name;
/// every string and presentation the ADMX references exists in the ADML.
#[test]
fn admx_adml() {
    require("xmllint", "libxml2-utils");
    require("python3", "python3");
    let dir = repo().join("installers/windows/policy");
    let admx = dir.join("duress.admx");
    let adml = dir.join("en-US/duress.adml");
    run(Command::new("xmllint").arg("--noout").arg(&admx).arg(&adml));
    let script = r#"
import re, sys, xml.etree.ElementTree as ET
ns = {'p': 'http://schemas.microsoft.com/GroupPolicy/2006/07/PolicyDefinitions'}
admx = ET.parse(sys.argv[1]).getroot()
adml = ET.parse(sys.argv[2]).getroot()
strings = {s.get('id') for s in adml.iter('{%s}string' % ns['p'])}
pres = {s.get('id') for s in adml.iter('{%s}presentation' % ns['p'])}
text = open(sys.argv[1]).read()
missing = [s for s in re.findall(r'\$\(string\.([^)]+)\)', text) if s not in strings]
missing += [s for s in re.findall(r'\$\(presentation\.([^)]+)\)', text) if s not in pres]
assert not missing, missing
for pol in admx.iter('{%s}policy' % ns['p']):
    key = pol.get('key')
    names = [pol.get('valueName')] + [e.get('valueName') for e in pol.iter() if e is not pol]
    for n in names:
        if n:
            print(key + '|' + n)
"#;
    let listed = run(Command::new("python3")
        .args(["-c", script])
        .arg(&admx)
        .arg(&adml));
    let listed: Vec<(&str, &str)> = listed.lines().map(|l| l.split_once('|').unwrap()).collect();
    let base = r"Software\Policies\Duress\Agent\";
    for k in keys() {
        let found = listed.iter().any(|(key, name)| {
            *name == k.name
                && key.strip_prefix(base).is_some_and(|rest| {
                    if k.in_array {
                        rest.strip_prefix(&format!(r"{}\", k.table))
                            .is_some_and(|n| n.parse::<u32>().is_ok())
                    } else {
                        rest == k.table
                    }
                })
        });
        assert!(found, "no ADMX policy writes {}", k.path());
    }
}

/// Every key of the schema is present in `table` (receivers: in the first receiver).
fn assert_every_key(table: &toml_table::Table, what: &str) {
    for k in keys() {
        let Key { table: t, name, .. } = *k;
        let present = match table.get(t) {
            Some(toml_table::Value::Array(a)) if k.in_array => {
                a.first().and_then(|r| r.get(name)).is_some()
            }
            Some(toml_table::Value::Table(tt)) => tt.contains_key(name),
            _ => false,
        };
        assert!(present, "{what} does not carry {}", k.path());
    }
}

/// The `toml` types, through the agent core (the tests crate has no direct toml dependency).
mod toml_table {
    pub use duress_agent_core::policy::sources::TomlTable as Table;
    pub use duress_agent_core::policy::sources::TomlValue as Value;
}
