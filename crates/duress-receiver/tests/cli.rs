//! The command-line contract other scripts and tests rely on, run as the real binary.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_duress-receiver");

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// Proves `token create` prints the token alone on its last line, `devices list --json` and
/// `incidents list --json` print JSON arrays, `events export` prints JSON Lines, and errors
/// exit non-zero with a message.
#[test]
fn admin_commands_print_what_scripts_parse() {
    let top = tempfile::tempdir().unwrap();
    // A data directory that does not exist yet: the first command creates it (0700, below).
    let dir_path = top.path().join("data");
    let d = dir_path.to_str().unwrap();
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
    // Issue 15: the data directory is the receiver's alone, and so is its database.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir_path), 0o700, "data directory");
        assert_eq!(
            mode(&dir_path.join("receiver.sqlite3")),
            0o600,
            "database file"
        );
    }
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

/// A multi-use token is manual approval unless asked otherwise (whoever copies it from a
/// deployment share must not get a trusted station without an admin's look); a one-use token
/// is automatic; `--approve` always wins.
#[test]
fn multi_use_tokens_default_to_manual_approval() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let approval = |args: &[&str]| {
        let out = run(&[&["token", "create", "--data-dir", d][..], args].concat());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("approve manual") {
            "manual"
        } else {
            assert!(text.contains("approve auto"), "{text}");
            "auto"
        }
    };
    assert_eq!(approval(&[]), "auto");
    assert_eq!(approval(&["--uses", "1"]), "auto");
    assert_eq!(approval(&["--uses", "2"]), "manual");
    assert_eq!(approval(&["--uses", "500", "--approve", "auto"]), "auto");
    assert_eq!(approval(&["--uses", "1", "--approve", "manual"]), "manual");
}

/// Proves the `backup` / `restore` contract: `backup --data-dir D --out F`, then
/// `restore --from F --data-dir D2` into an empty directory, which verifies the audit chain; a
/// second restore over the data is refused without `--force` (non-zero exit) and works with it.
#[test]
fn backup_and_restore_commands() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    let d = d.to_str().unwrap();
    let out = run(&["token", "create", "--data-dir", d]);
    assert!(out.status.success());
    let file = dir.path().join("b.backup");
    let f = file.to_str().unwrap();
    let out = run(&["backup", "--data-dir", d, "--out", f]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("backup written: "));
    let d2 = dir.path().join("restored");
    let d2 = d2.to_str().unwrap();
    let out = run(&["restore", "--from", f, "--data-dir", d2]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("audit chain ok: "), "{stdout}");
    let out = run(&["restore", "--from", f, "--data-dir", d2]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    let out = run(&["restore", "--from", f, "--data-dir", d2, "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

/// Proves `--log-format json` makes every log line of `serve` one JSON object with the stable
/// fields log collectors key on (issue 21), and that the default stays text.
#[cfg(unix)]
#[test]
fn serve_logs_json_lines_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--log-format",
            "json",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = stdout.next().unwrap().unwrap();
    assert!(
        first.starts_with("Duress receiver listening on "),
        "{first}"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "serve logged nothing at info");
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        for field in ["timestamp", "level", "target"] {
            assert!(v[field].is_string(), "no {field}: {line}");
        }
        assert!(v["fields"]["message"].is_string(), "no message: {line}");
    }
}

/// Proves a wrong or unreachable `--database` is one clear error line that names the URL
/// without its password, with a non-zero exit, for `serve` (which never starts half-working:
/// nothing listens, no certificate is made) and for an admin command; and that the same
/// commands work on a real PostgreSQL (enrollment token, then `serve` prints its store).
#[test]
fn a_bad_database_url_is_one_clear_error_and_a_good_one_serves() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    // A socket directory with no server in it: unreachable at once.
    let nowhere = tempfile::tempdir().unwrap();
    let unreachable = format!(
        "postgres://duress:s3cret-pw@/duress?host={}",
        nowhere.path().display()
    );
    for url in [unreachable.as_str(), "mysql://duress:s3cret-pw@db/duress"] {
        for args in [
            vec![
                "serve",
                "--data-dir",
                d,
                "--listen",
                "127.0.0.1:0",
                "--database",
                url,
            ],
            vec!["devices", "list", "--data-dir", d, "--database", url],
        ] {
            let out = Command::new(BIN)
                .args(&args)
                .env("RUST_LOG", "off")
                .output()
                .unwrap();
            assert!(!out.status.success(), "{args:?} must fail");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains("s3cret-pw"), "password shown: {stderr}");
            let line = stderr.trim();
            assert_eq!(line.lines().count(), 1, "one line: {stderr}");
            assert!(
                line.starts_with("duress-receiver: error:") && line.contains("/duress"),
                "names the store: {stderr}"
            );
            assert!(String::from_utf8_lossy(&out.stdout).is_empty());
        }
    }
    assert!(
        !dir.path().join("tls").exists(),
        "serve must not half-start (it made a certificate)"
    );

    let pg = duress_testpg::TestPg::shared().unwrap_or_else(|e| panic!("{e}"));
    let url = pg.fresh_url().unwrap();
    let out = Command::new(BIN)
        .args(["token", "create", "--data-dir", d])
        .env("DURESS_DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut serve = Command::new(BIN)
        .args([
            "serve",
            "--data-dir",
            d,
            "--listen",
            "127.0.0.1:0",
            "--database",
            &url,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    let mut store_line = None;
    for line in lines.by_ref().take(8) {
        let line = line.unwrap();
        if line.starts_with("Store: ") {
            store_line = Some(line);
            break;
        }
    }
    let _ = serve.kill();
    let _ = serve.wait();
    let store_line = store_line.expect("serve prints its store");
    assert!(store_line.ends_with("(postgresql)"), "{store_line}");
}

/// Proves `ack-key show` prints the public JWK as JSON, then its thumbprint alone on the last
/// line, creates the key once (DIR/ack-keys.json, mode 0600) and prints the same key again;
/// `ack-key rotate` changes the current key and `retire` removes the old one; `token revoke`
/// reads the token from `--token-file FILE` and from `--token-file -` (stdin).
#[test]
fn ack_key_show_and_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let show = || {
        let out = run(&["ack-key", "show", "--data-dir", d]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = show();
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines.len(), 2, "{first}");
    let jwk: duress_core::Jwk = serde_json::from_str(lines[0]).unwrap();
    jwk.to_verifying_key().unwrap();
    assert_eq!(lines[1], jwk.thumbprint());
    assert_eq!(show(), first, "created once");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("ack-keys.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let out = run(&["ack-key", "rotate", "--data-dir", d]);
    assert!(out.status.success());
    let rotated = String::from_utf8(out.stdout).unwrap();
    assert_ne!(rotated.lines().last(), first.lines().last());
    let listed = String::from_utf8(run(&["ack-key", "list", "--data-dir", d]).stdout).unwrap();
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(
        run(&["ack-key", "retire", "--data-dir", d])
            .status
            .success()
    );
    let listed = String::from_utf8(run(&["ack-key", "list", "--data-dir", d]).stdout).unwrap();
    assert_eq!(listed.lines().count(), 1, "{listed}");

    let token = || {
        let out = run(&["token", "create", "--data-dir", d]);
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .to_owned()
    };
    let file = dir.path().join("token.txt");
    std::fs::write(&file, format!("{}\n", token())).unwrap();
    let out = run(&[
        "token",
        "revoke",
        "--data-dir",
        d,
        "--token-file",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut child = Command::new(BIN)
        .args(["token", "revoke", "--data-dir", d, "--token-file", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{}", token()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An unknown token read from a file is refused, as on the command line.
    std::fs::write(&file, "det_unknown\n").unwrap();
    let out = run(&[
        "token",
        "revoke",
        "--data-dir",
        d,
        "--token-file",
        file.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
}

/// Proves `serve --console-listen` (here from the file's `[console] listen`) serves the console
/// on its own port and the agent API on `--listen`, that `--console-allow` wins over the file's
/// `allow`, and that a bad network is one clear error.
#[cfg(unix)]
#[tokio::test]
async fn serve_console_listen_and_allow_flags() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("data");
    let config = dir.path().join("receiver.toml");
    std::fs::write(
        &config,
        "[console]\nlisten = \"127.0.0.1:0\"\nallow = [\"10.0.0.0/8\"]\n",
    )
    .unwrap();
    let bad = Command::new(BIN)
        .args([
            "serve",
            "--data-dir",
            d.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--console-allow", "10.0.0.0/33"])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("10.0.0.0/33") && stderr.contains("CIDR"),
        "{stderr}"
    );

    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--data-dir",
            d.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--config", config.to_str().unwrap()])
        .args(["--console-allow", "127.0.0.1", "--console-allow", "::1/128"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut agent_url = None;
    let mut console_url = None;
    for line in lines.by_ref().take(10) {
        let line = line.unwrap();
        if let Some(u) = line.strip_prefix("Duress receiver listening on ") {
            agent_url = Some(u.to_owned());
        }
        if let Some(u) = line.strip_prefix("Console listening on ") {
            console_url = Some(u.to_owned());
            break;
        }
    }
    let (agent_url, console_url) = (agent_url.unwrap(), console_url.expect("console line"));
    assert_ne!(agent_url, console_url);
    let client = common::console::raw_client(&d.join("tls/cert.pem"));
    let status = |url: String| {
        let client = client.clone();
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        status(format!("{console_url}/login")).await,
        200,
        "allowed by the flag"
    );
    assert_eq!(status(format!("{agent_url}/login")).await, 404);
    assert_eq!(status(format!("{agent_url}/healthz")).await, 200);
    assert_eq!(status(format!("{console_url}/healthz")).await, 404);
    let _ = child.kill();
    let _ = child.wait();
}
