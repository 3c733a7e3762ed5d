//! The audit log's hash chain, the same for every backend. Each entry stores the previous
//! entry's hash and its own, over the canonical content, the JSON array
//! `[id, at, actor, action, subject, detail]`:
//!
//! - keyed entries (`keyed = true`, every entry written since the key existed):
//!   `hash = HMAC-SHA256(audit key, prev_hash || canonical content)`;
//! - legacy entries (written before this receiver had an audit key):
//!   `hash = SHA-256(prev_hash || canonical content)`.
//!
//! **Why an HMAC key outside the database, and not a signed head.** The threat is someone who
//! can write the database but not the receiver's data directory (a PostgreSQL administrator, a
//! restored or copied SQLite file, SQL injection elsewhere): with a plain SHA-256 chain they can
//! alter an entry and recompute every later hash with SQL. A signed head only protects entries
//! up to the last head that was signed and exported; every entry written after it could still
//! be rewritten unseen. Keying each entry closes that window for every entry, needs no extra
//! write per append (the key is read once when the store opens), and is the same for both
//! backends. What a key cannot show — the newest entries deleted, or an older copy of the
//! database put back — is what the head is for: `duress-receiver audit head` prints
//! `ID:HASH`, an auditor keeps it outside the receiver, and `audit verify --expect-head` checks
//! that entry is still there with that hash. The stored head (`audit_head`) also names
//! deletions of the newest entries when it was not rewritten along with them.
//!
//! The key is a file in the data directory ([`KEY_FILE`], mode 0600, created on first use),
//! never in the database. It records from which entry on every entry must be keyed, so
//! rewriting keyed entries as legacy ones is named too. Several receivers sharing one
//! PostgreSQL database must share the file (copy it from the first one's data directory).
//!
//! Backends append inside the transaction of the change an entry records, serialised so that
//! two writers never chain onto the same predecessor (SQLite: the database write lock;
//! PostgreSQL: a transaction-scoped advisory lock).

use std::path::Path;

use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use super::{AuditEntry, StoreError, StoreResult};

/// `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The audit key's file in the data directory.
pub const KEY_FILE: &str = "audit-hmac.key";

/// The HMAC key the audit chain is keyed with, and the first entry it keys.
#[derive(Clone)]
pub struct AuditKey {
    secret: Zeroizing<[u8; 32]>,
    /// Entries with this id or higher must be keyed; lower ones were written before the key.
    keyed_from: i64,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKey")
            .field("keyed_from", &self.keyed_from)
            .finish_non_exhaustive()
    }
}

/// The key file's content (JSON).
#[derive(serde::Serialize, serde::Deserialize)]
struct KeyFile {
    alg: String,
    /// 32 bytes, hex.
    key: String,
    keyed_from: i64,
}

impl AuditKey {
    /// Reads `DATA_DIR/audit-hmac.key`, or creates it (mode 0600) when missing, keying every
    /// entry from `next_id` on (the id the next appended entry will get).
    pub fn load_or_create(data_dir: &Path, next_id: i64) -> StoreResult<AuditKey> {
        let path = data_dir.join(KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => return Self::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "reading the audit key {}: {e}",
                    path.display()
                )));
            }
        }
        let mut secret = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(secret.as_mut()).map_err(|e| {
            StoreError::Unavailable(format!("no randomness for the audit key: {e}"))
        })?;
        let file = KeyFile {
            alg: "HMAC-SHA256".into(),
            key: hex::encode(secret.as_ref()),
            keyed_from: next_id.max(1),
        };
        let text = Zeroizing::new(serde_json::to_string(&file).unwrap_or_default() + "\n");
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
                tracing::info!(path = %path.display(), keyed_from = file.keyed_from, "audit key created");
                Ok(AuditKey {
                    secret,
                    keyed_from: file.keyed_from,
                })
            }
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    StoreError::Unavailable(format!(
                        "reading the audit key {}: {e}",
                        path.display()
                    ))
                })?;
                Self::parse(&text, &path)
            }
            Err(e) => Err(StoreError::Unavailable(format!(
                "creating the audit key {}: {e}",
                path.display()
            ))),
        }
    }

    fn parse(text: &str, path: &Path) -> StoreResult<AuditKey> {
        let bad =
            |why: &str| StoreError::Corrupt(format!("the audit key {} {why}", path.display()));
        let file: KeyFile = serde_json::from_str(text).map_err(|_| bad("is not valid JSON"))?;
        if file.alg != "HMAC-SHA256" {
            return Err(bad("names an unknown algorithm"));
        }
        let bytes = Zeroizing::new(hex::decode(&file.key).map_err(|_| bad("is not hex"))?);
        let mut secret = Zeroizing::new([0u8; 32]);
        if bytes.len() != 32 {
            return Err(bad("is not 32 bytes"));
        }
        secret.copy_from_slice(&bytes);
        #[cfg(unix)]
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt as _;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "the audit key is readable by others: chmod 600 it");
            }
        }
        Ok(AuditKey {
            secret,
            keyed_from: file.keyed_from,
        })
    }

    /// A key for tests and benchmarks that keep no data directory.
    pub fn from_bytes(secret: [u8; 32], keyed_from: i64) -> AuditKey {
        AuditKey {
            secret: Zeroizing::new(secret),
            keyed_from,
        }
    }

    /// From which entry on every entry must be keyed.
    pub fn keyed_from(&self) -> i64 {
        self.keyed_from
    }

    /// The keyed hash of one entry (what appends store).
    // The six fields are the canonical content itself; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn entry_hash(
        &self,
        prev_hash: &str,
        id: i64,
        at: &str,
        actor: &str,
        action: &str,
        subject: &str,
        detail: &str,
    ) -> String {
        let canonical = canonical(id, at, actor, action, subject, detail);
        // HMAC takes a key of any length; a 32-byte one cannot fail.
        let mut mac = <Hmac<Sha256>>::new_from_slice(self.secret.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(prev_hash.as_bytes());
        mac.update(canonical.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

fn canonical(id: i64, at: &str, actor: &str, action: &str, subject: &str, detail: &str) -> String {
    serde_json::json!([id, at, actor, action, subject, detail]).to_string()
}

/// The legacy (unkeyed) hash of one entry: entries written before the audit key existed.
pub fn entry_hash(
    prev_hash: &str,
    id: i64,
    at: &str,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> String {
    let canonical = canonical(id, at, actor, action, subject, detail);
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical.as_bytes());
    hex::encode(h.finalize())
}

/// The chain's head: the newest entry's id and hash (`0:GENESIS` for an empty log). Printed
/// and parsed as `ID:HASH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditHead {
    pub id: i64,
    pub hash: String,
}

impl AuditHead {
    pub fn empty() -> AuditHead {
        AuditHead {
            id: 0,
            hash: GENESIS.to_owned(),
        }
    }
}

impl std::fmt::Display for AuditHead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.id, self.hash)
    }
}

impl std::str::FromStr for AuditHead {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (id, hash) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not a head (ID:HASH, as `audit head` prints it)"))?;
        let id: i64 = id
            .parse()
            .ok()
            .filter(|id| *id >= 0)
            .ok_or_else(|| format!("{id:?} is not an entry id"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{hash:?} is not a 64-digit hex hash"));
        }
        Ok(AuditHead {
            id,
            hash: hash.to_ascii_lowercase(),
        })
    }
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// The first entry that does not verify (or the first missing one).
    pub id: i64,
    pub reason: String,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "audit chain broken at entry {}: {}",
            self.id, self.reason
        )
    }
}

/// Recomputes the whole chain (entries in id order) under `key`: `Ok(count)` or the first bad
/// entry. `stored_head` is what the database's head row says (`None`: the backend keeps none);
/// `expect` is a head printed earlier by `audit head`, which must still be in the chain.
pub fn verify(
    entries: &[AuditEntry],
    key: &AuditKey,
    stored_head: Option<&AuditHead>,
    expect: Option<&AuditHead>,
) -> Result<usize, ChainBreak> {
    let mut prev = GENESIS.to_owned();
    for (expected_id, e) in (1i64..).zip(entries.iter()) {
        let broken = |reason: &str| {
            Err(ChainBreak {
                id: e.id,
                reason: reason.to_owned(),
            })
        };
        if e.id != expected_id {
            return broken(&format!(
                "expected entry {expected_id} here (an entry was removed)"
            ));
        }
        if e.prev_hash != prev {
            return broken("prev_hash does not match the previous entry's hash");
        }
        if !e.keyed && e.id >= key.keyed_from {
            return broken(&format!(
                "entry is not keyed, but every entry from {} on must be (it was rewritten)",
                key.keyed_from
            ));
        }
        let args = (
            &e.prev_hash,
            e.id,
            &e.at,
            &e.actor,
            &e.action,
            &e.subject,
            &e.detail,
        );
        let computed = if e.keyed {
            key.entry_hash(args.0, args.1, args.2, args.3, args.4, args.5, args.6)
        } else {
            entry_hash(args.0, args.1, args.2, args.3, args.4, args.5, args.6)
        };
        if computed != e.hash {
            return broken(if e.keyed {
                "its HMAC does not verify under this data directory's audit key (the row was \
                 altered or its hash recomputed without the key)"
            } else {
                "content does not match its hash (the row was altered)"
            });
        }
        prev = e.hash.clone();
    }
    let last = entries.last().map_or(0, |e| e.id);
    // The stored head is read before the entries (so a concurrent append can only make the
    // log longer than it): it must be in the chain like an expected head.
    if let Some(head) = stored_head {
        if head.id > last {
            return Err(ChainBreak {
                id: last + 1,
                reason: format!(
                    "the stored head names entry {}, but the log ends at {last} (the newest \
                     entries were deleted)",
                    head.id
                ),
            });
        }
        if hash_at(entries, head.id) != Some(head.hash.as_str()) {
            return Err(ChainBreak {
                id: head.id,
                reason: "the stored head's hash differs from this entry's".into(),
            });
        }
    }
    if let Some(h) = expect {
        if h.id > last {
            return Err(ChainBreak {
                id: last + 1,
                reason: format!(
                    "the expected head {h} is newer than the log, which ends at {last} (the \
                     newest entries were deleted, or an older copy of the database is in place)"
                ),
            });
        }
        if hash_at(entries, h.id) != Some(h.hash.as_str()) {
            return Err(ChainBreak {
                id: h.id,
                reason: format!(
                    "entry {} does not have the expected head's hash (the chain was rewritten, \
                     or this is another database)",
                    h.id
                ),
            });
        }
    }
    Ok(entries.len())
}

/// The hash of entry `id` in a verified chain (`GENESIS` for 0).
fn hash_at(entries: &[AuditEntry], id: i64) -> Option<&str> {
    if id == 0 {
        return Some(GENESIS);
    }
    usize::try_from(id - 1)
        .ok()
        .and_then(|i| entries.get(i))
        .map(|e| e.hash.as_str())
}

/// The next entry after `last` (`None`: the log is empty): its id and `prev_hash`.
pub fn next_after(last: Option<(i64, String)>) -> (i64, String) {
    match last {
        Some((id, hash)) => (id + 1, hash),
        None => (1, GENESIS.to_owned()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key() -> AuditKey {
        AuditKey::from_bytes([7; 32], 3)
    }

    /// Entries 1 and 2 legacy, 3.. keyed (a log that predates its key).
    fn chain(n: i64) -> Vec<AuditEntry> {
        let key = key();
        let mut out: Vec<AuditEntry> = Vec::new();
        for id in 1..=n {
            let prev = out.last().map_or(GENESIS.to_owned(), |e| e.hash.clone());
            let at = format!("2026-12-01T00:00:0{id}.000Z");
            let keyed = id >= key.keyed_from();
            let hash = if keyed {
                key.entry_hash(&prev, id, &at, "a", "x", "s", "d")
            } else {
                entry_hash(&prev, id, &at, "a", "x", "s", "d")
            };
            out.push(AuditEntry {
                id,
                at,
                actor: "a".into(),
                action: "x".into(),
                subject: "s".into(),
                detail: "d".into(),
                prev_hash: prev,
                hash,
                keyed,
            });
        }
        out
    }

    fn head(entries: &[AuditEntry]) -> AuditHead {
        entries.last().map_or(AuditHead::empty(), |e| AuditHead {
            id: e.id,
            hash: e.hash.clone(),
        })
    }

    #[test]
    fn a_chain_verifies_and_each_kind_of_tampering_is_named() {
        let k = key();
        let good = chain(5);
        let h = head(&good);
        assert_eq!(verify(&good, &k, Some(&h), Some(&h)), Ok(5));
        assert_eq!(verify(&[], &k, None, Some(&AuditHead::empty())), Ok(0));

        let mut altered = chain(5);
        altered[1].detail = "other".into();
        assert_eq!(verify(&altered, &k, None, None).unwrap_err().id, 2);

        let mut removed = chain(5);
        removed.remove(1);
        assert!(
            verify(&removed, &k, None, None)
                .unwrap_err()
                .reason
                .contains("removed")
        );

        // The newest entries deleted: the stored head, or the expected one, names it.
        let truncated = &good[..3];
        assert!(verify(truncated, &k, None, None).is_ok());
        assert!(
            verify(truncated, &k, Some(&h), None)
                .unwrap_err()
                .reason
                .contains("deleted")
        );
        assert!(
            verify(truncated, &k, None, Some(&h))
                .unwrap_err()
                .reason
                .contains("older copy")
        );

        // Recomputed without the key (as plain SHA-256, marked legacy, or under another key).
        let mut recomputed = chain(5);
        recomputed[3].detail = "nothing to see".into();
        let mut prev = recomputed[2].hash.clone();
        for e in &mut recomputed[3..] {
            e.prev_hash = prev.clone();
            e.hash = entry_hash(
                &e.prev_hash,
                e.id,
                &e.at,
                &e.actor,
                &e.action,
                &e.subject,
                &e.detail,
            );
            e.keyed = false;
            prev = e.hash.clone();
        }
        assert!(
            verify(&recomputed, &k, None, None)
                .unwrap_err()
                .reason
                .contains("not keyed")
        );
        let other = AuditKey::from_bytes([8; 32], 3);
        assert!(
            verify(&good, &other, None, None)
                .unwrap_err()
                .reason
                .contains("HMAC")
        );

        // A head from another chain.
        let mut forged = h.clone();
        forged.hash = "ab".repeat(32);
        assert!(verify(&good, &k, None, Some(&forged)).is_err());
    }

    #[test]
    fn heads_print_and_parse() {
        let h: AuditHead = format!("12:{}", "AB".repeat(32)).parse().unwrap();
        assert_eq!(h.to_string(), format!("12:{}", "ab".repeat(32)));
        assert!("12".parse::<AuditHead>().is_err());
        assert!("-1:00".parse::<AuditHead>().is_err());
        assert!(
            format!("x:{}", "ab".repeat(32))
                .parse::<AuditHead>()
                .is_err()
        );
    }

    #[test]
    fn the_key_file_is_created_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let a = AuditKey::load_or_create(dir.path(), 5).unwrap();
        let b = AuditKey::load_or_create(dir.path(), 99).unwrap();
        assert_eq!(a.keyed_from(), 5);
        assert_eq!(b.keyed_from(), 5, "an existing key keeps its start");
        assert_eq!(
            a.entry_hash(GENESIS, 1, "t", "a", "b", "c", "d"),
            b.entry_hash(GENESIS, 1, "t", "a", "b", "c", "d")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(KEY_FILE)).unwrap())
                .unwrap();
        let secret = file["key"].as_str().unwrap();
        assert_eq!(secret.len(), 64);
        assert!(
            !format!("{a:?}").contains(&secret[..16]),
            "Debug never shows the key"
        );
    }
}
