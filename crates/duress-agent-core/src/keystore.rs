//! The device key in the OS keystore.
//!
//! keyring 3 with one explicit store per OS (Secret Service on Linux/BSD, Credential Manager on
//! Windows, Keychain on macOS). The credential is built from the OS's own type, never through
//! keyring's default builder, so keyring's in-memory mock can never be used by accident: when
//! no keystore works the answer is [`KeystoreError::Unavailable`], never a silent fallback.
//!
//! Stored: the 32-byte Ed25519 seed (`set_secret`), under service [`SERVICE`] and user
//! `device-key-<install_id>` (the install id lives in the state database, so several isolated
//! agents can share one login). The seed is never written to a file or a log; in memory it lives
//! in [`DeviceKey`], whose `Debug` redacts it and whose memory is wiped on drop.

use duress_core::DeviceKey;
use zeroize::Zeroizing;

/// The keystore service name of every Duress secret.
pub const SERVICE: &str = "org.duress.agent";

/// Why the keystore could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeystoreError {
    /// No usable keystore (no Secret Service on the bus, locked collection, unsupported OS...).
    #[error("no keystore: {0}")]
    Unavailable(String),
    /// The keystore holds something that is not a 32-byte seed under our name.
    #[error("keystore entry {user} does not hold a 32-byte device key seed (found {len} bytes)")]
    Corrupt { user: String, len: usize },
    /// The OS random number generator failed.
    #[error("cannot draw randomness for a new device key: {0}")]
    Random(String),
}

/// The device key's slot in the OS keystore.
#[derive(Debug, Clone)]
pub struct Keystore {
    user: String,
}

impl Keystore {
    /// The slot of the agent whose state database holds `install_id`.
    pub fn for_install(install_id: &str) -> Self {
        Keystore {
            user: format!("device-key-{install_id}"),
        }
    }

    /// The keystore user name (`device-key-<install_id>`), for messages.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The stored key, or `None` when the slot is empty.
    pub fn load(&self) -> Result<Option<DeviceKey>, KeystoreError> {
        let entry = platform::entry(&self.user)?;
        match entry.get_secret() {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                let seed: Zeroizing<[u8; 32]> =
                    Zeroizing::new(bytes.as_slice().try_into().map_err(|_| {
                        KeystoreError::Corrupt {
                            user: self.user.clone(),
                            len: bytes.len(),
                        }
                    })?);
                Ok(Some(DeviceKey::from_seed(&seed)))
            }
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Generates a new key (OS randomness), stores it and reads it back: a key we cannot read
    /// back is a key we must not enroll.
    pub fn create(&self) -> Result<DeviceKey, KeystoreError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::getrandom(seed.as_mut()).map_err(|e| KeystoreError::Random(e.to_string()))?;
        let entry = platform::entry(&self.user)?;
        entry.set_secret(seed.as_ref()).map_err(unavailable)?;
        match self.load()? {
            Some(k) if *k.seed() == *seed => Ok(k),
            _ => Err(KeystoreError::Unavailable(format!(
                "the keystore accepted the device key {} but does not give it back",
                self.user
            ))),
        }
    }

    /// The stored key, creating one when the slot is empty.
    pub fn load_or_create(&self) -> Result<DeviceKey, KeystoreError> {
        match self.load()? {
            Some(k) => Ok(k),
            None => self.create(),
        }
    }

    /// Removes the key (tests, re-enrollment). An empty slot is not an error.
    pub fn delete(&self) -> Result<(), KeystoreError> {
        match platform::entry(&self.user)?.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }
}

fn unavailable(e: keyring::Error) -> KeystoreError {
    let hint = if cfg!(any(
        target_os = "linux",
        target_os = "freebsd",
        target_os = "openbsd"
    )) {
        " (Linux needs a Secret Service on the session D-Bus, e.g. an unlocked gnome-keyring)"
    } else {
        ""
    };
    KeystoreError::Unavailable(format!("{e}{hint}"))
}

#[cfg(any(target_os = "linux", target_os = "freebsd", target_os = "openbsd"))]
mod platform {
    use super::{KeystoreError, SERVICE, unavailable};

    /// A Secret Service item in the default collection.
    pub(super) fn entry(user: &str) -> Result<keyring::Entry, KeystoreError> {
        let cred = keyring::secret_service::SsCredential::new_with_target(None, SERVICE, user)
            .map_err(unavailable)?;
        Ok(keyring::Entry::new_with_credential(Box::new(cred)))
    }
}

#[cfg(target_os = "windows")]
mod platform {
    use super::{KeystoreError, SERVICE, unavailable};

    /// A generic credential in the Windows Credential Manager (≤ 2,560 bytes: the seed is 32).
    pub(super) fn entry(user: &str) -> Result<keyring::Entry, KeystoreError> {
        let cred = keyring::windows::WinCredential::new_with_target(None, SERVICE, user)
            .map_err(unavailable)?;
        Ok(keyring::Entry::new_with_credential(Box::new(cred)))
    }
}

#[cfg(target_os = "macos")]
mod platform {
    use super::{KeystoreError, SERVICE, unavailable};

    /// A generic password in the login Keychain.
    pub(super) fn entry(user: &str) -> Result<keyring::Entry, KeystoreError> {
        let cred = keyring::macos::MacCredential::new_with_target(None, SERVICE, user)
            .map_err(unavailable)?;
        Ok(keyring::Entry::new_with_credential(Box::new(cred)))
    }
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "windows",
    target_os = "macos"
)))]
mod platform {
    use super::KeystoreError;

    /// No supported keystore on this OS: say so rather than fall back to memory.
    pub(super) fn entry(_user: &str) -> Result<keyring::Entry, KeystoreError> {
        Err(KeystoreError::Unavailable(
            "this operating system has no supported keystore".into(),
        ))
    }
}

/// Test helper: fails loudly (never skips) when no Secret Service is reachable.
#[cfg(test)]
pub(crate) fn require_keystore() {
    let probe = Keystore::for_install(&format!("probe-{}", uuid::Uuid::now_v7()));
    let outcome = probe.create().map(|_| ()).and_then(|()| probe.delete());
    if let Err(e) = outcome {
        panic!(
            "\n\n*** THE OS KEYSTORE IS NOT REACHABLE: {e}\n\
             *** These tests use the real Secret Service, never a mock. Run them inside a\n\
             *** private session bus with an unlocked gnome-keyring, e.g.:\n\
             ***   export HOME=$(mktemp -d); dbus-run-session -- bash -c 'eval \"$(printf pw | \
             gnome-keyring-daemon --unlock --components=secrets)\"; export GNOME_KEYRING_CONTROL \
             SSH_AUTH_SOCK; cargo test -p duress-agent-core'\n\
             *** (or scripts/with-keyring cargo test ...)\n\n"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seed stored in the real Secret Service comes back bit for bit; a missing slot reads as
    /// `None`; deletion empties the slot. Fails (does not skip) without a keystore.
    #[test]
    fn secret_service_round_trip() {
        require_keystore();
        let ks = Keystore::for_install(&format!("test-{}", uuid::Uuid::now_v7()));
        assert!(ks.load().unwrap().is_none());
        let key = ks.create().unwrap();
        let again = ks.load().unwrap().expect("stored");
        assert_eq!(*again.seed(), *key.seed());
        assert_eq!(again.public_jwk(), key.public_jwk());
        // load_or_create keeps the existing key.
        assert_eq!(ks.load_or_create().unwrap().public_jwk(), key.public_jwk());
        ks.delete().unwrap();
        assert!(ks.load().unwrap().is_none());
        ks.delete().unwrap();
    }

    /// Two installations on one login have separate keys.
    #[test]
    fn installations_are_isolated() {
        require_keystore();
        let a = Keystore::for_install(&format!("a-{}", uuid::Uuid::now_v7()));
        let b = Keystore::for_install(&format!("b-{}", uuid::Uuid::now_v7()));
        let ka = a.create().unwrap();
        assert!(b.load().unwrap().is_none());
        let kb = b.create().unwrap();
        assert_ne!(ka.public_jwk(), kb.public_jwk());
        a.delete().unwrap();
        b.delete().unwrap();
    }

    /// The keystore user name carries the install id and the error text says "no keystore".
    #[test]
    fn names_and_messages() {
        assert_eq!(Keystore::for_install("abc").user(), "device-key-abc");
        let e = KeystoreError::Unavailable("x".into());
        assert!(e.to_string().starts_with("no keystore: "));
    }
}
