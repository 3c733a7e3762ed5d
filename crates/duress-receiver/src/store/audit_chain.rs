//! The audit log's hash chain, the same for every backend. Each entry stores the previous
//! entry's hash and `hash = SHA-256(prev_hash || canonical content)`, where the canonical
//! content is the JSON array `[id, at, actor, action, subject, detail]`. Changing, inserting or
//! deleting an entry in the middle breaks the chain at that entry; [`verify`] names it.
//!
//! Backends append inside the transaction of the change an entry records, serialised so that
//! two writers never chain onto the same predecessor (SQLite: the database write lock;
//! PostgreSQL: a transaction-scoped advisory lock).

use sha2::{Digest as _, Sha256};

use super::AuditEntry;

/// `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of one entry.
pub fn entry_hash(
    prev_hash: &str,
    id: i64,
    at: &str,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> String {
    let canonical = serde_json::json!([id, at, actor, action, subject, detail]).to_string();
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical.as_bytes());
    hex::encode(h.finalize())
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    /// The first entry that does not verify.
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

/// Recomputes the whole chain (entries in id order): `Ok(count)` or the first bad entry.
pub fn verify(entries: &[AuditEntry]) -> Result<usize, ChainBreak> {
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
        if entry_hash(
            &e.prev_hash,
            e.id,
            &e.at,
            &e.actor,
            &e.action,
            &e.subject,
            &e.detail,
        ) != e.hash
        {
            return broken("content does not match its hash (the row was altered)");
        }
        prev = e.hash.clone();
    }
    Ok(entries.len())
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

    fn chain(n: i64) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = Vec::new();
        for id in 1..=n {
            let prev = out.last().map_or(GENESIS.to_owned(), |e| e.hash.clone());
            let at = format!("2026-12-01T00:00:0{id}.000Z");
            let hash = entry_hash(&prev, id, &at, "a", "x", "s", "d");
            out.push(AuditEntry {
                id,
                at,
                actor: "a".into(),
                action: "x".into(),
                subject: "s".into(),
                detail: "d".into(),
                prev_hash: prev,
                hash,
            });
        }
        out
    }

    #[test]
    fn a_chain_verifies_and_each_kind_of_tampering_is_named() {
        assert_eq!(verify(&chain(3)), Ok(3));
        let mut altered = chain(3);
        altered[1].detail = "other".into();
        assert_eq!(verify(&altered).unwrap_err().id, 2);
        let mut removed = chain(3);
        removed.remove(1);
        assert!(verify(&removed).unwrap_err().reason.contains("removed"));
    }
}
