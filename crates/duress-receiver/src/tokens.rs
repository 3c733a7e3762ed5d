//! Enrollment tokens: `det_` + base64url of 32 random bytes. Only their SHA-256 is stored,
//! and only a short prefix of that hash is ever logged.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};

/// Prefix of every token, so a leaked one is recognisable by secret scanners.
pub const TOKEN_PREFIX: &str = "det_";

/// A fresh token (256 bits from the OS generator).
pub fn generate() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)?;
    Ok(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// SHA-256 of the token text, lower-case hex: the stored form and the lookup key. A plain
/// hash suffices (no salt, no KDF): the token has 256 bits of entropy, so nothing can be
/// guessed from its hash.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// What logs show instead of a token: the first 8 hex digits of its hash.
pub fn log_ref(token_hash: &str) -> &str {
    token_hash.get(..8).unwrap_or(token_hash)
}

/// A token from a file (its first line, trimmed) or, for `-`, from standard input: what
/// `--token-file` reads, so the token never appears on a command line other users can read.
pub fn read_token_file(path: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context as _;
    use std::io::Read as _;
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .take(64 * 1024)
            .read_to_string(&mut text)
            .context("reading the token from standard input")?;
    } else {
        text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?;
    }
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.is_empty() {
        anyhow::bail!("{} holds no token", path.display());
    }
    Ok(token)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_hashed() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert!(a.starts_with("det_"));
        assert_eq!(a.len(), 4 + 43);
        assert_ne!(a, b);
        assert_eq!(hash(&a).len(), 64);
        assert_eq!(log_ref(&hash(&a)).len(), 8);
        assert!(!hash(&a).contains(&a[4..]));
    }
}
