//! The HTTP client of a channel: rustls with ring (as the rest of the workspace: reqwest's
//! `rustls-no-provider`), the OS trust store through rustls-platform-verifier, plus the
//! channel's own `ca_cert` (a private CA of a local relay or of the tests) when it names one.
//! No redirects: a redirect could carry a signed body somewhere else.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

/// How long one delivery attempt may take, connection included: a hanging endpoint costs one
/// attempt, then the row is retried later.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificates of a PEM file (at least one).
pub fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("reading {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// The TLS client configuration of an outbound channel or sink: the OS trust store, plus
/// `ca_cert`'s certificates when given (the HTTP channels and the syslog sink share it).
pub fn tls_client_config(ca_cert: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let extra = match ca_cert {
        Some(p) => read_ca(p)?,
        None => Vec::new(),
    };
    let verifier: Arc<dyn ServerCertVerifier> = if extra.is_empty() {
        Arc::new(
            rustls_platform_verifier::Verifier::new(provider.clone())
                .map_err(|e| format!("the OS trust store: {e}"))?,
        )
    } else {
        Arc::new(
            rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
                .map_err(|e| format!("the OS trust store with ca_cert: {e}"))?,
        )
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// A client for one channel.
pub fn client(ca_cert: Option<&Path>) -> Result<reqwest::Client, String> {
    let config = tls_client_config(ca_cert)?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(ATTEMPT_TIMEOUT)
        .connect_timeout(ATTEMPT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("duress-receiver/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("building the HTTP client: {e}"))
}
