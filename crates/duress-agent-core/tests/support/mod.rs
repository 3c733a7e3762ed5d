//! Test support shared by the sender's suites: a test CA, an HTTPS stub serving an axum app
//! with a given certificate chain, and event tokens the stubs can read.
#![allow(clippy::unwrap_used, dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use duress_agent_core::duress_core::EventAck;
use duress_agent_core::sender::{SendOutcome, Sender};
use uuid::Uuid;

/// A CA certificate named `name`, self-signed.
pub fn ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

/// Serves `app` over TLS with `chain` (leaf first, exactly as given) and `leaf_key` on
/// 127.0.0.1:0; returns the base URL.
pub fn serve_tls(
    app: Router,
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    leaf_key: &rcgen::KeyPair,
) -> String {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            chain,
            rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let server = axum_server::from_tcp_rustls(
        listener,
        axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config)),
    )
    .unwrap();
    tokio::spawn(server.serve(app.into_make_service()));
    format!("https://127.0.0.1:{}", addr.port())
}

/// A token whose payload carries `id` (the stubs do not verify signatures).
pub fn token_for(id: Uuid) -> String {
    let key = duress_agent_core::duress_core::DeviceKey::from_seed(&[9u8; 32]);
    let claims = serde_json::json!({ "id": id });
    key.sign(
        duress_agent_core::duress_core::Typ::Event,
        Some("dev"),
        claims.to_string().as_bytes(),
    )
}

/// Posts one event with a fresh id.
pub async fn send(sender: &Sender) -> SendOutcome<EventAck> {
    let id = Uuid::now_v7();
    sender.post_event(&token_for(id), id).await
}
