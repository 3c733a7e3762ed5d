//! The key TOTP secrets are sealed with at rest: AES-256-GCM, held in `DATA_DIR/totp-secrets.key`
//! outside the database, so a copy of the database alone (a dump, a stolen backup of PostgreSQL)
//! does not hold a single usable second factor.
//!
//! Made at first start like `audit-hmac.key` (random 32 bytes, JSON, mode 0600, created with
//! `create_new` so two processes starting at once agree on one file). Receivers sharing one
//! PostgreSQL database must share this file too (copy it into each node's data directory, as
//! the audit key; docs/storage.md); the data-directory backup includes it.
//!
//! A sealed secret is `nonce (12 bytes) ‖ ciphertext+tag`; the associated data names the
//! account, so a sealed secret copied onto another user's row does not open.

use std::path::Path;

use aes_gcm::aead::{Aead as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use anyhow::Context as _;
use zeroize::Zeroizing;

/// The key's file in the data directory.
pub const KEY_FILE: &str = "totp-secrets.key";
const ALG: &str = "AES-256-GCM";
const NONCE_BYTES: usize = 12;

/// The sealing key (never printed: `Debug` shows nothing of it).
pub struct TotpKey {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for TotpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpKey").finish_non_exhaustive()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct KeyFile {
    alg: String,
    /// 32 bytes, hex.
    key: String,
}

fn associated_data(username: &str) -> Vec<u8> {
    let mut aad = b"duress totp secret v1\0".to_vec();
    aad.extend_from_slice(username.as_bytes());
    aad
}

impl TotpKey {
    /// Reads `DATA_DIR/totp-secrets.key`, or creates it (mode 0600) when missing.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<TotpKey> {
        let path = data_dir.join(KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => return Self::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
        let mut secret = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(secret.as_mut())
            .map_err(|e| anyhow::anyhow!("no randomness for the TOTP key: {e}"))?;
        let file = KeyFile {
            alg: ALG.into(),
            key: hex::encode(secret.as_ref()),
        };
        let text = Zeroizing::new(serde_json::to_string(&file)? + "\n");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let written = options.open(&path).and_then(|mut f| {
            use std::io::Write as _;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        });
        match written {
            Ok(()) => {
                tracing::info!(path = %path.display(), "TOTP secret key created");
                Ok(Self::from_bytes(&secret))
            }
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                Self::parse(&text, &path)
            }
            Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }

    fn from_bytes(secret: &[u8; 32]) -> TotpKey {
        TotpKey {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(secret)),
        }
    }

    fn parse(text: &str, path: &Path) -> anyhow::Result<TotpKey> {
        let bad = |why: &str| anyhow::anyhow!("the TOTP key {} {why}", path.display());
        let file: KeyFile = serde_json::from_str(text).map_err(|_| bad("is not valid JSON"))?;
        if file.alg != ALG {
            return Err(bad("names an unknown algorithm"));
        }
        let bytes = Zeroizing::new(hex::decode(&file.key).map_err(|_| bad("is not hex"))?);
        let secret: Zeroizing<[u8; 32]> = Zeroizing::new(
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| bad("is not 32 bytes"))?,
        );
        Ok(Self::from_bytes(&secret))
    }

    /// Seals `secret` for `username`'s row: a fresh random nonce, then the ciphertext.
    pub fn seal(&self, username: &str, secret: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::getrandom(&mut nonce).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let aad = associated_data(username);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: &aad,
                },
            )
            .map_err(|_| anyhow::anyhow!("sealing the TOTP secret failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`TotpKey::seal`] sealed for `username`; an error when it was sealed under
    /// another key (a node without the cluster's key file) or for another user, or altered.
    pub fn open(&self, username: &str, sealed: &[u8]) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        anyhow::ensure!(
            sealed.len() > NONCE_BYTES,
            "the sealed TOTP secret is truncated"
        );
        let (nonce, ciphertext) = sealed.split_at(NONCE_BYTES);
        let aad = associated_data(username);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| {
                anyhow::anyhow!(
                    "the TOTP secret does not open with this receiver's {KEY_FILE} \
                     (another node's key file, or an altered row)"
                )
            })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_for_their_user_and_key_and_the_file_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let key = TotpKey::load_or_create(dir.path()).unwrap();
        let sealed = key.seal("olga", b"0123456789abcdefghij").unwrap();
        assert!(!sealed.windows(20).any(|w| w == b"0123456789abcdefghij"));
        assert_eq!(
            key.open("olga", &sealed).unwrap().as_slice(),
            b"0123456789abcdefghij"
        );
        assert!(
            key.open("mallory", &sealed).is_err(),
            "bound to the account"
        );
        let again = TotpKey::load_or_create(dir.path()).unwrap();
        assert!(
            again.open("olga", &sealed).is_ok(),
            "the same file, the same key"
        );
        let other = TotpKey::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        assert!(other.open("olga", &sealed).is_err());
        assert_eq!(format!("{key:?}"), "TotpKey { .. }");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
