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
    /// The certificate `server_config` presents, replaceable while serving (SIGHUP, file change).
    pub cert: Arc<ReloadableCert>,
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
    let cert = Arc::new(ReloadableCert::load(cert_path.clone(), key_path)?);
    let fingerprint = cert.fingerprint();
    Ok(TlsMaterial {
        server_config: Arc::new(server_config(cert.clone())?),
        cert,
        trust_path: cert_path,
        fingerprint,
    })
}

/// The server's certificate and key, read from their files and replaceable while the server
/// runs, so certbot, lego or an internal CA can rotate them without a restart (issue 21).
///
/// rustls asks `ResolvesServerCert::resolve` for the certificate at each handshake, so a
/// reload changes what *new* connections see; established connections keep theirs and are
/// never dropped. A new pair is checked before it replaces the old one — both files parse, the
/// key matches the certificate (`CertifiedKey::from_der` compares the public keys), and the
/// certificate is within its validity period — and a bad one is refused with the reason while
/// the old pair stays in service.
#[derive(Debug)]
pub struct ReloadableCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: std::sync::RwLock<Served>,
}

#[derive(Debug, Clone)]
struct Served {
    key: Arc<rustls::sign::CertifiedKey>,
    fingerprint: String,
    /// The files' modification times when read: what [`ReloadableCert::reload_if_changed`]
    /// compares.
    stamps: (Option<std::time::SystemTime>, Option<std::time::SystemTime>),
}

impl ReloadableCert {
    /// Reads and checks the pair; an error names the file and what is wrong.
    pub fn load(cert_path: PathBuf, key_path: PathBuf) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let served = read_pair(&cert_path, &key_path, &provider)?;
        Ok(ReloadableCert {
            cert_path,
            key_path,
            provider,
            current: std::sync::RwLock::new(served),
        })
    }

    /// SHA-256 of the certificate being served, `AB:CD:…`.
    pub fn fingerprint(&self) -> String {
        self.read().fingerprint.clone()
    }

    /// The certificate and key files.
    pub fn paths(&self) -> (&Path, &Path) {
        (&self.cert_path, &self.key_path)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Served> {
        // A panic while holding the lock cannot leave `Served` half-written (it is replaced
        // whole), so a poisoned lock still holds a usable value.
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the files again and, if the new pair is good, serves it from the next handshake
    /// on. Returns the new fingerprint; on error the old pair stays.
    pub fn reload(&self) -> Result<String, TlsError> {
        let served = read_pair(&self.cert_path, &self.key_path, &self.provider)?;
        let fingerprint = served.fingerprint.clone();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = served;
        Ok(fingerprint)
    }

    /// [`Self::reload`] when either file's modification time differs from when it was last
    /// read; `None` when neither changed.
    pub fn reload_if_changed(&self) -> Option<Result<String, TlsError>> {
        let now = (modified(&self.cert_path), modified(&self.key_path));
        if now == self.read().stamps {
            return None;
        }
        let result = self.reload();
        if result.is_err() {
            // Remember the bad pair's times: it is reported once, not at every poll; the next
            // change of either file is tried again.
            self.current
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .stamps = now;
        }
        Some(result)
    }
}

impl rustls::server::ResolvesServerCert for ReloadableCert {
    fn resolve(
        &self,
        _client_hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.read().key.clone())
    }
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn read_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Served, TlsError> {
    let stamps = (modified(cert_path), modified(key_path));
    let chain = read_certs(cert_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::Pem {
        path: key_path.to_owned(),
        what: format!("no usable private key: {e}"),
    })?;
    check_validity(cert_path, &chain[0])?;
    let fingerprint = fingerprint(&chain[0]);
    let key =
        rustls::sign::CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Pem {
            path: key_path.to_owned(),
            what: format!("does not belong to {}: {e}", cert_path.display()),
        })?;
    Ok(Served {
        key: Arc::new(key),
        fingerprint,
        stamps,
    })
}

/// Refuses a certificate that is expired or not yet valid: serving it would make every agent
/// refuse the receiver.
fn check_validity(path: &Path, der: &CertificateDer<'_>) -> Result<(), TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        what: format!("bad certificate: {e}"),
    })?;
    let validity = cert.validity();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if now < validity.not_before.timestamp() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: format!("not valid before {}", validity.not_before),
        });
    }
    if now > validity.not_after.timestamp() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: format!("expired on {}", validity.not_after),
        });
    }
    Ok(())
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
fn server_config(cert: Arc<ReloadableCert>) -> Result<rustls::ServerConfig, TlsError> {
    let provider = cert.provider.clone();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(cert);
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

/// How often the certificate files are checked for a change (besides SIGHUP).
pub const CERT_POLL: std::time::Duration = std::time::Duration::from_secs(10);

/// Reloads `cert` on SIGHUP (Unix) and whenever its files change (checked every
/// [`CERT_POLL`]); logs each reload and each refusal. Runs until aborted.
pub async fn watch_certificate(cert: Arc<ReloadableCert>) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut poll = tokio::time::interval(CERT_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.tick().await;
    loop {
        #[cfg(unix)]
        let hup = async {
            match hangup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hup = std::future::pending::<()>();
        let (why, result) = tokio::select! {
            () = hup => ("SIGHUP", Some(cert.reload())),
            _ = poll.tick() => ("the files changed", cert.reload_if_changed()),
        };
        let (cert_path, _) = cert.paths();
        match result {
            None => {}
            Some(Ok(fingerprint)) => tracing::info!(
                path = %cert_path.display(), %fingerprint, reason = why,
                "TLS certificate reloaded: new connections get it"
            ),
            Some(Err(e)) => tracing::error!(
                error = %e, reason = why,
                "TLS certificate NOT reloaded, the previous one stays in service"
            ),
        }
    }
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
