//! Certificate rotation without a restart (issue 21): the real `serve` binary with
//! `--tls-cert/--tls-key` files; `kill -HUP` after the files are replaced makes new connections
//! get the new certificate while a kept-alive connection keeps working; a changed file is
//! picked up without a signal; a key that does not match, or an expired certificate, is refused
//! with a log line and the old certificate stays in service.
#![cfg(unix)]
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_duress-receiver");

fn names() -> Vec<String> {
    vec!["localhost".into(), "127.0.0.1".into()]
}

fn write_pair(dir: &Path, cert: &str, key: &str) {
    // Written beside and renamed over, as certbot and lego do.
    for (name, text) in [("key.pem", key), ("cert.pem", cert)] {
        let tmp = dir.join(format!(".{name}.new"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

mod common;

fn fingerprint_of_pem(pem: &str) -> String {
    let der = common::rustls_pki_certs(pem.as_bytes()).remove(0);
    duress_receiver::tls::fingerprint(&der)
}

/// The SHA-256 fingerprint of the certificate a new TLS connection to `port` is shown
/// (openssl s_client, an independent TLS client).
fn presented_fingerprint(port: u16) -> String {
    // One retry: a handshake may meet the moment a test rewrites the files.
    presented_fingerprint_once(port)
        .or_else(|| {
            std::thread::sleep(Duration::from_millis(300));
            presented_fingerprint_once(port)
        })
        .unwrap_or_else(|| panic!("openssl s_client got no certificate from 127.0.0.1:{port}"))
}

fn presented_fingerprint_once(port: u16) -> Option<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername localhost </dev/null 2>/dev/null \
             | openssl x509 -noout -fingerprint -sha256"
        ))
        .output()
        .expect("openssl (apt-get install openssl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.trim().split_once('=').map(|(_, f)| f.to_owned())
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A client trusting only `pem` (reqwest keeps its connections alive between requests).
fn client_trusting(dir: &Path, pem: &str) -> reqwest::Client {
    let path = dir.join(format!(
        "trust-{}.pem",
        fingerprint_of_pem(pem).replace(':', "")
    ));
    std::fs::write(&path, pem).unwrap();
    common::webpki_client(&path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_on_sighup_and_on_change_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls-files");
    std::fs::create_dir_all(&tls).unwrap();
    let (cert_a, key_a) = duress_receiver::tls::generate_self_signed(&names()).unwrap();
    write_pair(&tls, &cert_a, &key_a);

    let stderr_path = dir.path().join("stderr.log");
    let mut child = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(tls.join("cert.pem"))
        .arg("--tls-key")
        .arg(tls.join("key.pem"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let first = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let port: u16 = first.rsplit(':').next().unwrap().parse().unwrap();
    let url = format!("https://localhost:{port}/healthz");
    let pid = child.id().to_string();
    let hup = || {
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    let log = || {
        let mut s = String::new();
        std::fs::File::open(&stderr_path)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        s
    };

    let deadline = Instant::now() + Duration::from_secs(10);
    while presented_fingerprint_once(port).is_none() {
        assert!(
            Instant::now() < deadline,
            "no TLS handshake; the receiver logged:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(presented_fingerprint(port), fingerprint_of_pem(&cert_a));
    // A connection kept alive across the rotation: trusting only A, it can only keep working
    // if the receiver does not drop it.
    let kept = client_trusting(dir.path(), &cert_a);
    assert!(kept.get(&url).send().await.unwrap().status().is_success());

    // 1. New pair + SIGHUP: new connections get B at once.
    let (cert_b, key_b) = duress_receiver::tls::generate_self_signed(&names()).unwrap();
    write_pair(&tls, &cert_b, &key_b);
    hup();
    wait_for("the SIGHUP reload", || {
        presented_fingerprint(port) == fingerprint_of_pem(&cert_b)
    });
    assert!(
        kept.get(&url).send().await.unwrap().status().is_success(),
        "the kept-alive connection was dropped by the rotation"
    );
    assert!(
        client_trusting(dir.path(), &cert_b)
            .get(&url)
            .send()
            .await
            .is_ok()
    );

    // 2. A key that does not belong to the certificate: refused, B stays.
    let (cert_c, _) = duress_receiver::tls::generate_self_signed(&names()).unwrap();
    let (_, key_d) = duress_receiver::tls::generate_self_signed(&names()).unwrap();
    write_pair(&tls, &cert_c, &key_d);
    hup();
    wait_for("the refusal in the log", || log().contains("NOT reloaded"));
    assert_eq!(presented_fingerprint(port), fingerprint_of_pem(&cert_b));

    // 3. An expired certificate: refused, B stays.
    let expired = {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(names()).unwrap();
        params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
        params.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    };
    let refusals = log().matches("NOT reloaded").count();
    write_pair(&tls, &expired.0, &expired.1);
    hup();
    wait_for("the expiry refusal", || {
        log().matches("NOT reloaded").count() > refusals
    });
    assert!(log().contains("expired on"), "{}", log());
    assert_eq!(presented_fingerprint(port), fingerprint_of_pem(&cert_b));

    // 4. A good pair written without any signal: picked up by the file watch.
    let (cert_e, key_e) = duress_receiver::tls::generate_self_signed(&names()).unwrap();
    write_pair(&tls, &cert_e, &key_e);
    wait_for("the file-change reload", || {
        presented_fingerprint(port) == fingerprint_of_pem(&cert_e)
    });
    assert!(
        !log().contains("BEGIN PRIVATE KEY") && !log().contains(key_e.lines().nth(1).unwrap()),
        "a private key reached the log"
    );

    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let _ = child.wait();
}
