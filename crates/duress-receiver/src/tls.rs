//! The receiver's TLS: a rustls server configuration (ring provider, TLS 1.2 and 1.3) built
//! from configured PEM files or from a self-signed certificate made on the first run.
//!
//! The self-signed certificate is a single ECDSA P-256 certificate with `CA:false`, the
//! `serverAuth` purpose and SANs `localhost`, `127.0.0.1`, `::1` and the machine's hostname.
//! Agents add `DATA_DIR/tls/cert.pem` itself as a trust anchor: webpki (and therefore
//! rustls-platform-verifier on Linux) accepts a self-signed end-entity certificate as its own
//! anchor, which `tests/tls.rs` proves both through a bare webpki root store and through
//! reqwest's platform verifier with an extra root. A single file keeps the contract of the CLI
//! ("first run writes DIR/tls/cert.pem and DIR/tls/key.pem"): whatever an agent loads from
//! `cert.pem` (first certificate or whole bundle) is the anchor. Validity is 825 days, the
//! longest macOS accepts for a TLS server certificate; production uses `--tls-cert/--tls-key`.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest as _, Sha256};

use crate::settings::{Settings, TlsSource};

/// Days the self-signed certificate is valid (Apple's limit for TLS server certificates).
const SELF_SIGNED_VALIDITY_DAYS: i64 = 825;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Pem { path: PathBuf, what: String },
    #[error("generating the self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What the server serves and what agents must trust.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    pub server_config: Arc<rustls::ServerConfig>,
    /// The PEM file an agent adds as a trust anchor (self-signed mode) or the served chain.
    pub trust_path: PathBuf,
    /// SHA-256 of the DER of the first certificate in `trust_path`, `AB:CD:…` (upper-case).
    pub fingerprint: String,
}

/// `DATA_DIR/tls/cert.pem` and `DATA_DIR/tls/key.pem`.
pub fn self_signed_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// Loads (creating on the first run in self-signed mode) the certificate of `settings`.
pub fn load(settings: &Settings) -> Result<TlsMaterial, TlsError> {
    let (cert_path, key_path) = match &settings.tls {
        TlsSource::Files { cert, key } => (cert.clone(), key.clone()),
        TlsSource::SelfSigned => ensure_self_signed(&settings.data_dir)?,
    };
    let chain = read_certs(&cert_path)?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| TlsError::Pem {
        path: key_path.clone(),
        what: format!("no usable private key: {e}"),
    })?;
    let fingerprint = fingerprint(&chain[0]);
    Ok(TlsMaterial {
        server_config: Arc::new(server_config(chain, key)?),
        trust_path: cert_path,
        fingerprint,
    })
}

/// `AB:CD:…`: the SHA-256 of a DER certificate, as browsers and `openssl x509 -fingerprint
/// -sha256` show it.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_err = |what: String| TlsError::Pem {
        path: path.to_owned(),
        what,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(format!("cannot read certificates: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(format!("bad certificate PEM: {e}")))?;
    if chain.is_empty() {
        return Err(pem_err("contains no certificate".into()));
    }
    Ok(chain)
}

/// TLS 1.2 and 1.3 with the ring provider chosen explicitly (never a process-wide default, so
/// an embedding application's choice is left alone). ALPN offers h2 and HTTP/1.1.
fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Returns the self-signed pair, generating it when either file is missing.
fn ensure_self_signed(data_dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let (cert_path, key_path) = self_signed_paths(data_dir);
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let dir = data_dir.join("tls");
    fs::create_dir_all(&dir).map_err(|source| TlsError::Io {
        path: dir.clone(),
        source,
    })?;
    let (cert_pem, key_pem) = generate_self_signed(&local_names())?;
    // The key first and the certificate last: a crash in between leaves no cert.pem, and the
    // next start regenerates both instead of pairing a certificate with the wrong key.
    write_atomically(&key_path, key_pem.as_bytes(), 0o600)?;
    write_atomically(&cert_path, cert_pem.as_bytes(), 0o644)?;
    tracing::info!(path = %cert_path.display(), "generated a self-signed TLS certificate");
    Ok((cert_path, key_path))
}

/// `localhost`, the loopback addresses and this machine's hostname (when it is a usable DNS name).
fn local_names() -> Vec<String> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
    let host = gethostname::gethostname()
        .to_string_lossy()
        .trim()
        .to_ascii_lowercase();
    let usable = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if usable && !names.contains(&host) {
        names.push(host);
    }
    names
}

/// A self-signed ECDSA P-256 server certificate for `names`; returns (cert PEM, key PEM).
pub fn generate_self_signed(names: &[String]) -> Result<(String, String), TlsError> {
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    };
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(names.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Duress receiver (self-signed)");
    dn.push(DnType::OrganizationName, "Duress");
    params.distinguished_name = dn;
    // An end-entity certificate: webpki refuses a CA certificate used as the server's own.
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    // Back-dated a day so a client whose clock runs a little slow still accepts it.
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(SELF_SIGNED_VALIDITY_DAYS);
    let mut serial = [0u8; 16];
    getrandom::getrandom(&mut serial).map_err(|e| TlsError::Io {
        path: PathBuf::from("<getrandom>"),
        source: std::io::Error::other(e.to_string()),
    })?;
    serial[0] &= 0x7f; // positive, as RFC 5280 requires
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes `bytes` to a temporary file beside `path` with `mode`, fsyncs it, renames it over
/// `path` and fsyncs the directory: readers see the old file or the whole new one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        // The mode applies at creation, so the key is never readable by others, not even briefly.
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let _ = fs::remove_file(&tmp);
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    fs::rename(&tmp, path).map_err(io)?;
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_created_once_with_a_private_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings::new(dir.path());
        let first = load(&settings).unwrap();
        let (cert, key) = self_signed_paths(dir.path());
        assert_eq!(first.trust_path, cert);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let second = load(&settings).unwrap();
        assert_eq!(
            first.fingerprint, second.fingerprint,
            "reused, not regenerated"
        );
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
    }

    #[test]
    fn missing_files_are_an_error_naming_the_path() {
        let mut settings = Settings::new("/nonexistent");
        settings.tls = TlsSource::Files {
            cert: "/nonexistent/c.pem".into(),
            key: "/nonexistent/k.pem".into(),
        };
        let err = load(&settings).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/c.pem"), "{err}");
    }
}
