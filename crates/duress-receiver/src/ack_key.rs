//! The receiver's acknowledgement keys (docs/protocol.md §5.4, docs/deployment.md).
//!
//! An Ed25519 key that signs every answer acknowledging an event, kept in
//! `DATA_DIR/ack-keys.json` (mode 0600) and never in the database: whoever can write the
//! database (a PostgreSQL shared by several receivers, a restored backup) must still not be able
//! to make acknowledgements. Generated on the first `serve` (or `ack-key show`).
//!
//! Rotation with overlap:
//!
//! 1. `ack-key rotate`: a new key becomes *current* (it signs every new answer); the old one
//!    stays *listed* (`ack-key list` shows it). Agents that list both keys in their policy
//!    (`ack_key = "OLD; NEW"`) accept answers from a receiver on either side of the change.
//! 2. Once every agent's policy names the new key: `ack-key retire` removes the listed keys.
//!
//! A running receiver reads the file at start: restart it after `rotate`. A repeat of an event
//! acknowledged under a previous key is answered with a fresh signature by the current key (and
//! that signature is stored too), so an agent whose policy names only the new key still gets a
//! verifiable answer.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use duress_core::{AckSignature, AckSigningKey, Jwk};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;
use zeroize::Zeroizing;

/// The key file in the data directory.
pub const FILE_NAME: &str = "ack-keys.json";

/// `DATA_DIR/ack-keys.json`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// The file's contents: newest key first; the first is current.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    keys: Vec<StoredKey>,
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    /// base64url of the 32-byte seed.
    seed: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl Drop for StoredKey {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.seed.zeroize();
    }
}

/// One key as `ack-key list` shows it (public parts only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedKey {
    pub kid: String,
    pub jwk: Jwk,
    /// `current` (signs) or `listed` (kept for the overlap of a rotation).
    pub state: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// The loaded keys: the current one signs.
pub struct AckKeys {
    current: AckSigningKey,
    keys: Vec<ListedKey>,
}

impl std::fmt::Debug for AckKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckKeys")
            .field("current", &self.current.kid())
            .field("listed", &self.keys.len())
            .finish()
    }
}

impl AckKeys {
    /// Loads the key file, creating it with a fresh key when there is none.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<AckKeys> {
        let file = path(data_dir);
        if !file.exists() {
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            write(
                &file,
                &KeyFile {
                    version: 1,
                    keys: vec![new_key()?],
                },
            )?;
            tracing::info!(path = %file.display(), "generated the acknowledgement key");
        }
        AckKeys::load(data_dir)
    }

    /// Loads the key file (an error when there is none).
    pub fn load(data_dir: &Path) -> anyhow::Result<AckKeys> {
        let kf = read(&path(data_dir))?;
        from_file(&kf)
    }

    /// The key that signs.
    pub fn current(&self) -> &AckSigningKey {
        &self.current
    }

    /// Every key in the file, current first.
    pub fn list(&self) -> &[ListedKey] {
        &self.keys
    }

    /// What `ack-key show` prints: the current public JWK as JSON, then its thumbprint alone on
    /// the last line.
    pub fn show_text(&self) -> String {
        format!("{}\n{}\n", self.current_jwk_json(), self.current.kid())
    }

    /// What `ack-key list` prints: one JSON object per key, current first.
    pub fn list_text(&self) -> String {
        self.keys
            .iter()
            .map(|k| format!("{}\n", serde_json::to_string(k).unwrap_or_default()))
            .collect()
    }

    /// The current key's public JWK as one line of JSON.
    pub fn current_jwk_json(&self) -> String {
        serde_json::to_string(self.current.public_jwk()).unwrap_or_default()
    }
}

impl crate::store::AckSigner for AckKeys {
    fn sign_ack(
        &self,
        id: Uuid,
        received_at: OffsetDateTime,
        incident_id: Option<Uuid>,
    ) -> AckSignature {
        self.current.sign(id, received_at, incident_id)
    }
}

/// `ack-key rotate`: a new current key; the previous ones stay listed. Returns the new keys.
pub fn rotate(data_dir: &Path) -> anyhow::Result<AckKeys> {
    let file = path(data_dir);
    let mut kf = read(&file)?;
    kf.keys.insert(0, new_key()?);
    write(&file, &kf)?;
    from_file(&kf)
}

/// `ack-key retire`: removes the listed (non-current) keys, or only `kid` when given. Returns
/// how many were removed.
pub fn retire(data_dir: &Path, kid: Option<&str>) -> anyhow::Result<usize> {
    let file = path(data_dir);
    let mut kf = read(&file)?;
    let loaded = from_file(&kf)?;
    if kid == Some(loaded.current.kid()) {
        bail!(
            "{} is the current key: rotate first, then retire it",
            loaded.current.kid()
        );
    }
    if let Some(kid) = kid
        && !loaded.keys.iter().any(|k| k.kid == kid)
    {
        bail!("no acknowledgement key {kid} in {}", file.display());
    }
    let before = kf.keys.len();
    let mut index = 0;
    kf.keys.retain(|_| {
        let keep = index == 0 || kid.is_some_and(|k| loaded.keys[index].kid != k);
        index += 1;
        keep
    });
    write(&file, &kf)?;
    Ok(before - kf.keys.len())
}

fn new_key() -> anyhow::Result<StoredKey> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::getrandom(seed.as_mut())
        .map_err(|e| anyhow::anyhow!("drawing the acknowledgement key: {e}"))?;
    Ok(StoredKey {
        seed: URL_SAFE_NO_PAD.encode(seed.as_ref()),
        created_at: crate::clock::receiver_now()
            .replace_nanosecond(0)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
    })
}

fn from_file(kf: &KeyFile) -> anyhow::Result<AckKeys> {
    if kf.version != 1 {
        bail!("{FILE_NAME}: unknown version {}", kf.version);
    }
    let mut signing = Vec::with_capacity(kf.keys.len());
    for k in &kf.keys {
        let raw = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(k.seed.as_bytes())
                .map_err(|_| anyhow::anyhow!("{FILE_NAME}: a seed is not base64url"))?,
        );
        let seed: [u8; 32] = raw
            .as_slice()
            .try_into()
            .map_err(|_| anyhow::anyhow!("{FILE_NAME}: a seed is not 32 bytes"))?;
        signing.push((AckSigningKey::from_seed(&seed), k.created_at));
    }
    let keys = signing
        .iter()
        .enumerate()
        .map(|(i, (k, created_at))| ListedKey {
            kid: k.kid().to_owned(),
            jwk: k.public_jwk().clone(),
            state: if i == 0 { "current" } else { "listed" },
            created_at: *created_at,
        })
        .collect();
    let Some((current, _)) = signing.into_iter().next() else {
        bail!("{FILE_NAME} holds no key");
    };
    Ok(AckKeys { current, keys })
}

fn read(file: &Path) -> anyhow::Result<KeyFile> {
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(file) {
        use std::os::unix::fs::PermissionsExt as _;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %file.display(), "the acknowledgement key file is readable by others: chmod 600 it");
        }
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(file)
            .with_context(|| format!("reading the acknowledgement keys {}", file.display()))?,
    );
    serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))
}

fn write(file: &Path, kf: &KeyFile) -> anyhow::Result<()> {
    let text = Zeroizing::new(serde_json::to_vec_pretty(kf).context("serialising the keys")?);
    crate::tls::write_atomically(file, &text, 0o600)
        .with_context(|| format!("writing {}", file.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::AckSigner as _;

    #[test]
    fn created_once_0600_rotated_and_retired() {
        let dir = tempfile::tempdir().unwrap();
        let first = AckKeys::load_or_create(dir.path()).unwrap();
        let again = AckKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(first.current().kid(), again.current().kid());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        assert!(!format!("{first:?}").contains(&text[20..40]));

        let rotated = rotate(dir.path()).unwrap();
        assert_ne!(rotated.current().kid(), first.current().kid());
        assert_eq!(rotated.list().len(), 2);
        assert_eq!(rotated.list()[1].kid, first.current().kid());
        assert_eq!(rotated.list()[1].state, "listed");
        // The new key signs.
        let id = Uuid::now_v7();
        let at = OffsetDateTime::now_utc();
        assert_eq!(rotated.sign_ack(id, at, None).kid, rotated.current().kid());

        assert!(retire(dir.path(), Some(rotated.current().kid())).is_err());
        assert_eq!(retire(dir.path(), None).unwrap(), 1);
        let after = AckKeys::load(dir.path()).unwrap();
        assert_eq!(after.list().len(), 1);
        assert_eq!(after.current().kid(), rotated.current().kid());
    }
}
