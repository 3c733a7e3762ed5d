//! The sender's certificate pin (`ca_sha256`) and explicit proxy (`[network] proxy`), against a
//! tiny local HTTPS stub: a receiver with a self-signed certificate (as the receiver's dev setup
//! makes) is reachable with nothing but the pin; a wrong pin is refused even when the chain is
//! trusted; a pinned CA anchors its leaf and is the *only* anchor (a chain that merely carries
//! the public pinned CA behind another trusted CA is refused); a pinned leaf must be in date and
//! name the host; and a proxy, when set, carries every connection.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use base64::Engine as _;
use duress_agent_core::ReceiverConfig;
use duress_agent_core::duress_core::EventAck;
use duress_agent_core::sender::{SendOutcome, Sender};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use uuid::Uuid;

mod support;
use support::{ca, send};

async fn ack(body: Bytes) -> axum::Json<EventAck> {
    let token = String::from_utf8(body.to_vec()).unwrap();
    let p = token.split('.').nth(1).unwrap();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(p)
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    axum::Json(EventAck {
        id: Uuid::parse_str(claims["id"].as_str().unwrap()).unwrap(),
        incident_id: None,
        received_at: OffsetDateTime::now_utc(),
        delay_ms: 0,
        delayed: false,
        ack: None,
    })
}

struct Stub {
    url: String,
    /// SHA-256 (hex) of the leaf and of the CA (when there is one).
    leaf_sha256: String,
    ca_sha256: Option<String>,
    ca_pem: Option<(tempfile::TempDir, std::path::PathBuf)>,
}

fn hex(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An HTTPS stub on 127.0.0.1:0: self-signed (`with_ca = false`, like the receiver's own dev
/// certificate) or a leaf signed by a fresh CA, sent with the CA in the chain.
async fn start(with_ca: bool) -> Stub {
    let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let (chain, ca_sha256, ca_pem) = if with_ca {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "pin CA");
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let leaf = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.pem()).unwrap();
        (
            vec![leaf.der().clone(), ca.der().clone()],
            Some(hex(ca.der())),
            Some((dir, path)),
        )
    } else {
        let leaf = rcgen::CertificateParams::new(names)
            .unwrap()
            .self_signed(&leaf_key)
            .unwrap();
        (vec![leaf.der().clone()], None, None)
    };
    let leaf_sha256 = hex(&chain[0]);
    let url = serve(chain, &leaf_key);
    Stub {
        url,
        leaf_sha256,
        ca_sha256,
        ca_pem,
    }
}

/// Serves `chain` (leaf first, exactly as given) with `leaf_key`; every event is answered
/// with an acknowledgement naming its id. Returns the base URL.
fn serve(
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    leaf_key: &rcgen::KeyPair,
) -> String {
    support::serve_tls(
        Router::new().route("/v1/events", post(ack)),
        chain,
        leaf_key,
    )
}

fn write_pem(dir: &tempfile::TempDir, name: &str, pem: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, pem).unwrap();
    path
}

fn receiver(url: &str, ca: Option<&std::path::Path>, pin: Option<&str>) -> ReceiverConfig {
    let mut r = ReceiverConfig::new(url, ca.map(ToOwned::to_owned)).unwrap();
    r.ca_sha256 = pin.map(ToOwned::to_owned);
    r
}

/// Colons and upper case, as `RECEIVER_CA_SHA256` is usually pasted.
fn colons(hex: &str) -> String {
    hex.to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":")
}

/// A self-signed receiver certificate is accepted with its pin alone (no `ca_cert`), and
/// refused without the pin or with another one.
#[tokio::test]
async fn self_signed_receiver_is_trusted_only_through_its_pin() {
    let s = start(false).await;
    let pinned = Sender::new(&[receiver(&s.url, None, Some(&colons(&s.leaf_sha256)))]).unwrap();
    assert!(matches!(send(&pinned).await, SendOutcome::Acked(_)));

    let unpinned = Sender::new(&[receiver(&s.url, None, None)]).unwrap();
    assert!(matches!(send(&unpinned).await, SendOutcome::Unreachable(_)));

    let wrong = "00".repeat(32);
    let wrong_pin = Sender::new(&[receiver(&s.url, None, Some(&wrong))]).unwrap();
    match send(&wrong_pin).await {
        SendOutcome::Unreachable(e) => assert!(e.contains("pin"), "{e}"),
        other => panic!("a wrong pin must be refused: {other:?}"),
    }
}

/// A pin restricts even a chain that verifies: with the CA trusted through `ca_cert`, a pin
/// that matches nothing in the chain is refused; the CA's own pin is accepted, with or without
/// `ca_cert` (the pinned CA then anchors the leaf, whose name is still checked).
#[tokio::test]
async fn pin_restricts_and_a_pinned_ca_anchors_its_leaf() {
    let s = start(true).await;
    let ca_path = s.ca_pem.as_ref().unwrap().1.clone();
    let ca_pin = s.ca_sha256.clone().unwrap();

    let trusted = Sender::new(&[receiver(&s.url, Some(&ca_path), None)]).unwrap();
    assert!(matches!(send(&trusted).await, SendOutcome::Acked(_)));

    let wrong = "ab".repeat(32);
    let trusted_wrong_pin = Sender::new(&[receiver(&s.url, Some(&ca_path), Some(&wrong))]).unwrap();
    match send(&trusted_wrong_pin).await {
        SendOutcome::Unreachable(e) => assert!(e.contains("pin"), "{e}"),
        other => panic!("a pin that matches nothing must be refused: {other:?}"),
    }

    for ca in [Some(ca_path.as_path()), None] {
        let ca_pinned = Sender::new(&[receiver(&s.url, ca, Some(&ca_pin))]).unwrap();
        assert!(
            matches!(send(&ca_pinned).await, SendOutcome::Acked(_)),
            "CA pin, ca_cert {ca:?}"
        );
    }

    // The pinned CA anchors the chain, but the leaf must still name the host.
    let by_name = s.url.replace("127.0.0.1", "localhost");
    let wrong_host = s.url.replace("127.0.0.1", "127.0.0.2");
    let ok = Sender::new(&[receiver(&by_name, None, Some(&ca_pin))]).unwrap();
    assert!(matches!(send(&ok).await, SendOutcome::Acked(_)));
    let bad = Sender::new(&[receiver(&wrong_host, None, Some(&ca_pin))]).unwrap();
    assert!(matches!(send(&bad).await, SendOutcome::Unreachable(_)));
}

/// A minimal HTTP CONNECT proxy on 127.0.0.1:0 that counts the tunnels it opened.
async fn connect_proxy() -> (String, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let targets = Arc::new(Mutex::new(Vec::new()));
    let (c, t) = (count.clone(), targets.clone());
    tokio::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let (c, t) = (c.clone(), t.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                assert!(head.starts_with("CONNECT "), "{head}");
                c.fetch_add(1, Ordering::SeqCst);
                t.lock().unwrap().push(target.clone());
                let mut upstream = tokio::net::TcpStream::connect(&target).await.unwrap();
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (format!("http://127.0.0.1:{port}"), count, targets)
}

/// With `[network] proxy`, the connection to the receiver goes through the proxy (a CONNECT
/// tunnel; TLS and the pin still end-to-end); a proxy that does not answer makes the receiver
/// unreachable rather than being bypassed.
#[tokio::test]
async fn proxy_carries_the_connection() {
    let s = start(false).await;
    let (proxy, count, targets) = connect_proxy().await;
    let r = receiver(&s.url, None, Some(&s.leaf_sha256));
    let sender = Sender::with_proxy(std::slice::from_ref(&r), Some(&proxy)).unwrap();
    assert!(matches!(send(&sender).await, SendOutcome::Acked(_)));
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert_eq!(
        targets.lock().unwrap()[0],
        s.url.trim_start_matches("https://")
    );

    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let via_dead = Sender::with_proxy(&[r], Some(&dead_url)).unwrap();
    assert!(matches!(send(&via_dead).await, SendOutcome::Unreachable(_)));
    assert!(Sender::with_proxy(&[receiver(&s.url, None, None)], Some("::not a url")).is_err());
}

/// The attack that made an alarm vanish in silence: IT pins the receiver's CA `CA_P`; an
/// impostor holding a leaf from another CA `CA_X` that the workstation trusts (here through
/// `ca_cert`, standing for the OS store: a TLS-inspection proxy, a mis-issued certificate)
/// presents `[forged leaf, CA_X, CA_P]` and acknowledges every event. The pin matches `CA_P` in
/// the chain, but `CA_P` did not issue the path, so the connection is refused and the alarm is
/// never "acknowledged". The same impostor without the pin is accepted (the trust is real), which
/// shows that the refusal is the pin's doing.
#[tokio::test]
async fn a_pinned_ca_appended_to_another_trusted_chain_is_refused() {
    let pinned = ca("pinned receiver CA");
    let other = ca("another CA the workstation trusts");
    let dir = tempfile::tempdir().unwrap();
    let other_pem = write_pem(&dir, "other.pem", &other.pem());
    let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    let forged_key = rcgen::KeyPair::generate().unwrap();
    let forged = rcgen::CertificateParams::new(names)
        .unwrap()
        .signed_by(&forged_key, &other)
        .unwrap();
    let url = serve(
        vec![
            forged.der().clone(),
            other.der().clone(),
            pinned.der().clone(),
        ],
        &forged_key,
    );

    let unpinned = Sender::new(&[receiver(&url, Some(&other_pem), None)]).unwrap();
    assert!(
        matches!(send(&unpinned).await, SendOutcome::Acked(_)),
        "without a pin the trusted impostor chain verifies (the premise of the attack)"
    );
    let pin = hex(pinned.der());
    let sender = Sender::new(&[receiver(&url, Some(&other_pem), Some(&pin))]).unwrap();
    match send(&sender).await {
        SendOutcome::Unreachable(e) => assert!(!e.is_empty()),
        other => panic!("an impostor chain carrying the pinned CA must be refused: {other:?}"),
    }
    // The pinned CA itself as the only root, and not even `ca_cert` can widen it.
    let sender = Sender::new(&[receiver(&url, None, Some(&pin))]).unwrap();
    assert!(matches!(send(&sender).await, SendOutcome::Unreachable(_)));
}

/// A pinned CA with an intermediate between it and the leaf: `[leaf, intermediate, CA_P]`
/// verifies with `CA_P` as the only anchor; pinning the intermediate works too.
#[tokio::test]
async fn a_pinned_ca_anchors_a_chain_through_its_intermediate() {
    let root = ca("pinned root");
    let mut int_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    int_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    int_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "issuing intermediate");
    let intermediate =
        rcgen::CertifiedIssuer::signed_by(int_params, rcgen::KeyPair::generate().unwrap(), &root)
            .unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &intermediate)
        .unwrap();
    let url = serve(
        vec![
            leaf.der().clone(),
            intermediate.der().clone(),
            root.der().clone(),
        ],
        &leaf_key,
    );
    for pin in [hex(root.der()), hex(intermediate.der())] {
        let sender = Sender::new(&[receiver(&url, None, Some(&pin))]).unwrap();
        assert!(
            matches!(send(&sender).await, SendOutcome::Acked(_)),
            "pin {pin}"
        );
    }
}

/// A pinned leaf replaces the chain but not the rest of the checks: an expired pinned
/// certificate, one not yet valid, and one that does not name the host are refused.
#[tokio::test]
async fn a_pinned_leaf_must_be_in_date_and_name_the_host() {
    let now = OffsetDateTime::now_utc();
    for (label, not_before, not_after, names) in [
        (
            "expired",
            now - time::Duration::days(30),
            now - time::Duration::days(1),
            vec!["127.0.0.1"],
        ),
        (
            "not yet valid",
            now + time::Duration::days(1),
            now + time::Duration::days(30),
            vec!["127.0.0.1"],
        ),
        (
            "another host",
            now - time::Duration::days(1),
            now + time::Duration::days(30),
            vec!["receiver.example"],
        ),
    ] {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.into_iter().map(str::to_owned).collect::<Vec<_>>())
                .unwrap();
        params.not_before = not_before;
        params.not_after = not_after;
        let leaf = params.self_signed(&key).unwrap();
        let url = serve(vec![leaf.der().clone()], &key);
        let sender = Sender::new(&[receiver(&url, None, Some(&hex(leaf.der())))]).unwrap();
        assert!(
            matches!(send(&sender).await, SendOutcome::Unreachable(_)),
            "a pinned leaf that is {label} must be refused"
        );
    }
}
