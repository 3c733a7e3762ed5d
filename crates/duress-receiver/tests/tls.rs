//! The self-signed certificate works as the agent will use it: `cert.pem` added as a trust
//! anchor, through a bare webpki root store and through reqwest's platform verifier.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use duress_receiver::Settings;

/// Proves `cert.pem` alone is a working trust anchor for webpki (rustls `RootCertStore`), over
/// TLS 1.3 and TLS 1.2, for `127.0.0.1` and `localhost`, and that the fingerprint printed is
/// the SHA-256 of that certificate.
#[tokio::test]
async fn cert_pem_is_a_webpki_trust_anchor_over_tls12_and_tls13() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = duress_receiver::start(Settings::new(dir.path()))
        .await
        .unwrap();
    assert_eq!(receiver.cert_pem_path, dir.path().join("tls/cert.pem"));
    assert!(dir.path().join("tls/key.pem").exists());
    let pem = std::fs::read(&receiver.cert_pem_path).unwrap();
    let certs = common::rustls_pki_certs(&pem);
    assert_eq!(certs.len(), 1, "one self-signed certificate");
    assert_eq!(
        duress_receiver::tls::fingerprint(&certs[0]),
        receiver.cert_sha256
    );

    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(certs[0].clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .build()
            .unwrap();
        for host in ["127.0.0.1", "localhost"] {
            let url = format!("https://{host}:{}/healthz", receiver.addr.port());
            let resp = client.get(&url).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{url} over {version:?}");
        }
    }

    // Without the anchor the handshake fails: the test above is not passing by accident.
    let empty = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let untrusting = reqwest::Client::builder()
        .tls_backend_preconfigured(empty)
        .build()
        .unwrap();
    assert!(
        untrusting
            .get(format!("{}/healthz", receiver.url))
            .send()
            .await
            .is_err()
    );
    receiver.shutdown().await.unwrap();
}

/// Proves the path the agent takes by default works: reqwest's rustls-platform-verifier with
/// `cert.pem` added via `add_root_certificate`.
#[tokio::test]
async fn cert_pem_works_with_reqwest_platform_verifier_extra_root() {
    // reqwest is built without a bundled provider here; the agent installs ring the same way.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let receiver = duress_receiver::start(Settings::new(dir.path()))
        .await
        .unwrap();
    let pem = std::fs::read(&receiver.cert_pem_path).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let resp = client
        .get(format!("{}/healthz", receiver.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    receiver.shutdown().await.unwrap();
}

/// Proves configured certificate files are served (`TlsSource::Files`).
#[tokio::test]
async fn configured_certificate_files_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) =
        duress_receiver::tls::generate_self_signed(&["localhost".into(), "127.0.0.1".into()])
            .unwrap();
    let cert_path = dir.path().join("campus.pem");
    let key_path = dir.path().join("campus.key");
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let mut settings = Settings::new(dir.path().join("data"));
    settings.tls = duress_receiver::TlsSource::Files {
        cert: cert_path.clone(),
        key: key_path,
    };
    let receiver = duress_receiver::start(settings).await.unwrap();
    assert_eq!(receiver.cert_pem_path, cert_path);
    assert!(
        !dir.path().join("data/tls").exists(),
        "no self-signed cert made"
    );
    let client = common::webpki_client(&cert_path);
    let resp = client
        .get(format!("{}/healthz", receiver.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    receiver.shutdown().await.unwrap();
}
