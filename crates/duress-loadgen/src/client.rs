//! The HTTPS client: reqwest over rustls (ring), trusting exactly one CA file (the receiver's
//! self-signed certificate or the campus CA), keep-alive connections pooled per host.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use duress_core::JOSE_CONTENT_TYPE;

/// Whole-request timeout (an answer after this counts as "no answer": the caller retries).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A client whose only trust anchors are the PEM certificates in `ca_pem`. `pool` is how many
/// idle keep-alive connections it keeps per host (the connection limit is the caller's
/// concurrency: each in-flight request holds one).
pub fn https_client(ca_pem: &Path, pool: usize) -> anyhow::Result<reqwest::Client> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let pem = std::fs::read(ca_pem).with_context(|| format!("reading {}", ca_pem.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(cert.context("parsing the CA certificate")?)
            .context("adding the CA certificate")?;
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "{} holds no certificate",
        ca_pem.display()
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // HTTP/1.1 keep-alive: one request per connection at a time, like a workstation agent.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(pool)
        .pool_idle_timeout(Duration::from_secs(90))
        .connect_timeout(Duration::from_secs(5))
        .timeout(REQUEST_TIMEOUT)
        .build()?)
}

/// An HTTP answer read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Answer {
    pub async fn read(resp: reqwest::Response) -> Result<Self, reqwest::Error> {
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = resp.bytes().await?.to_vec();
        Ok(Answer {
            status,
            content_type,
            body,
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The problem `type` when this is a problem+json answer.
    pub fn problem(&self) -> Option<duress_core::Problem> {
        (self.content_type == duress_core::PROBLEM_CONTENT_TYPE)
            .then(|| serde_json::from_slice(&self.body).ok())
            .flatten()
    }
}

/// POSTs `body` to `base` + `path` with `content_type`.
pub async fn post(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<Answer, reqwest::Error> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let resp = client
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await?;
    Answer::read(resp).await
}

/// POSTs a compact JWS as `application/jose`.
pub async fn post_jose(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    token: &str,
) -> Result<Answer, reqwest::Error> {
    post(
        client,
        base,
        path,
        JOSE_CONTENT_TYPE,
        token.as_bytes().to_vec(),
    )
    .await
}
