//! The command-line contract other scripts and tests rely on, run as the real binary.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_duress-receiver");

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// Proves `token create` prints the token alone on its last line, `devices list --json` and
/// `incidents list --json` print JSON arrays, `events export` prints JSON Lines, and errors
/// exit non-zero with a message.
#[test]
fn admin_commands_print_what_scripts_parse() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = run(&[
        "token",
        "create",
        "--data-dir",
        d,
        "--uses",
        "3",
        "--expires",
        "2d",
        "--approve",
        "manual",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last = stdout.lines().last().unwrap();
    assert!(last.starts_with("det_") && !last.contains(' '), "{stdout}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(last),
        "token logged"
    );

    for args in [["devices", "list"], ["incidents", "list"]] {
        let out = run(&[args[0], args[1], "--data-dir", d, "--json"]);
        assert!(out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v, serde_json::json!([]));
    }
    let out = run(&["events", "export", "--data-dir", d]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());

    let out = run(&[
        "devices",
        "set-status",
        "--data-dir",
        d,
        "--device",
        "nope",
        "--status",
        "active",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no device"));
    let out = run(&["token", "create", "--data-dir", d, "--expires", "soon"]);
    assert!(!out.status.success());
}

/// Proves `serve` prints its URL and fingerprint, answers, and exits 0 on SIGTERM.
#[cfg(unix)]
#[test]
fn serve_prints_url_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .strip_prefix("Duress receiver listening on ")
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    assert!(url.starts_with("https://127.0.0.1:"));
    let second = lines.next().unwrap().unwrap();
    let fingerprint = second.strip_prefix("TLS certificate SHA-256: ").unwrap();
    assert_eq!(fingerprint.len(), 95);
    assert!(dir.path().join("tls/cert.pem").exists());

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(code) = child.try_wait().unwrap() {
            assert!(code.success(), "{code}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
