//! Desk phones as stations (issue 14, item 1; docs/integrations.md, "Desk phones"): the phone
//! inventory and the access-point table, as every backend stores them.
//!
//! A phone is also a `devices` row (events and incidents name a device), created with the
//! phone by [`PhoneStore::put_phones`]: a press then takes the agents' ingest path
//! ([`super::IngestStore::ingest_event`]) and groups, escalates and notifies like any alarm.
//! That row carries a key no signature verifies against, and never a heartbeat, so no agent can
//! speak as a phone and supervision (which skips never-seen stations) leaves it alone.

use duress_core::Location;
use uuid::Uuid;

use super::StoreFuture;

/// The hash-of-a-secret as stored: an argon2id PHC string. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash(pub String);

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

/// A phone of the inventory as the console and the CLI list it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneRecord {
    /// `SEP001122334455`: what CUCM substitutes for `#DEVICENAME#`, upper case.
    pub device_name: String,
    /// Its `devices` row (the station its incidents name).
    pub device_id: String,
    pub extension: String,
    pub label: String,
    pub building: Option<String>,
    pub floor: Option<String>,
    pub room: Option<String>,
    /// Requests for this phone must come from this network.
    pub allowed_network: ipnet::IpNet,
}

impl PhoneRecord {
    /// The phone's location as its incidents carry it.
    pub fn location(&self) -> Location {
        Location {
            label: Some(self.label.clone()),
            bld: self.building.clone(),
            flr: self.floor.clone(),
            room: self.room.clone(),
            ..Default::default()
        }
    }
}

/// What a phone request is checked against.
#[derive(Debug, Clone)]
pub struct PhoneCredential {
    pub phone: PhoneRecord,
    pub secret_hash: SecretHash,
}

/// A phone to add or change (an import line, a console edit).
#[derive(Debug, Clone)]
pub struct NewPhone {
    pub device_name: String,
    pub extension: String,
    pub label: String,
    pub building: Option<String>,
    pub floor: Option<String>,
    pub room: Option<String>,
    /// `None` keeps the stored secret (a console edit); a new phone needs one.
    pub secret_hash: Option<SecretHash>,
    pub allowed_network: ipnet::IpNet,
}

impl NewPhone {
    /// The audit entry's detail (never the secret, nor its hash).
    pub fn audit_detail(&self) -> String {
        format!(
            "extension={} label={:?} BLD={:?} FLR={:?} ROOM={:?} allowed_network={} secret={}",
            self.extension,
            self.label,
            self.building.as_deref().unwrap_or(""),
            self.floor.as_deref().unwrap_or(""),
            self.room.as_deref().unwrap_or(""),
            self.allowed_network,
            if self.secret_hash.is_some() {
                "set"
            } else {
                "kept"
            },
        )
    }

    /// The location its `devices` row and incidents carry.
    pub fn location(&self) -> Location {
        Location {
            label: Some(self.label.clone()),
            bld: self.building.clone(),
            flr: self.floor.clone(),
            room: self.room.clone(),
            ..Default::default()
        }
    }
}

/// A wireless access point: the BSSID a Spectralink/Cisco wireless phone reports locates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPoint {
    /// Lower case, colon separated: `00:11:22:aa:bb:cc`.
    pub bssid: String,
    pub label: String,
    pub building: Option<String>,
    pub floor: Option<String>,
    pub room: Option<String>,
}

impl AccessPoint {
    pub fn location(&self) -> Location {
        Location {
            label: Some(self.label.clone()),
            bld: self.building.clone(),
            flr: self.floor.clone(),
            room: self.room.clone(),
            ..Default::default()
        }
    }

    pub fn audit_detail(&self) -> String {
        format!(
            "label={:?} BLD={:?} FLR={:?} ROOM={:?}",
            self.label,
            self.building.as_deref().unwrap_or(""),
            self.floor.as_deref().unwrap_or(""),
            self.room.as_deref().unwrap_or(""),
        )
    }
}

/// Why a phone change was refused (nothing was written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhonePutRefusal {
    /// A new phone without a secret (an import line must carry one).
    SecretRequired(String),
}

/// The enrollment token every phone's `devices` row hangs off (created by the migration:
/// revoked, used up, and no SHA-256 hex, so no presented token ever matches it).
pub const PHONE_TOKEN_HASH: &str = "phone-inventory";

/// The `public_jwk` of a phone's `devices` row: parses as a JWK, but is no Ed25519 key, so no
/// signature can verify as a phone.
pub const PHONE_JWK: &str = r#"{"kty":"none","crv":"phone","x":""}"#;

/// The `kty` of [`PHONE_JWK`]: no agent key has it.
pub const PHONE_JWK_KTY: &str = "none";

/// The phone inventory and the access-point table.
pub trait PhoneStore: Send + Sync {
    /// Adds or changes these phones in one transaction (an import is all or nothing), each
    /// audited (`phone.put`); a new phone gets its `devices` row (active) in the same
    /// transaction. Returns how many, or the refusal (nothing written).
    fn put_phones<'a>(
        &'a self,
        phones: Vec<NewPhone>,
        actor: &'a str,
    ) -> StoreFuture<'a, Result<usize, PhonePutRefusal>>;
    /// Every phone, by device name.
    fn phones(&self) -> StoreFuture<'_, Vec<PhoneRecord>>;
    /// The phone with this (upper-case) device name and its secret's hash.
    fn phone_credential<'a>(
        &'a self,
        device_name: &'a str,
    ) -> StoreFuture<'a, Option<PhoneCredential>>;
    /// Removes the phone from the inventory, audited (`phone.remove`); its `devices` row is
    /// revoked and retired (its incidents keep naming it). `false`: no such phone.
    fn remove_phone<'a>(&'a self, device_name: &'a str, actor: &'a str) -> StoreFuture<'a, bool>;
    /// Adds or changes these access points in one transaction, each audited (`phone_ap.put`).
    fn put_access_points<'a>(
        &'a self,
        access_points: Vec<AccessPoint>,
        actor: &'a str,
    ) -> StoreFuture<'a, usize>;
    /// Every access point, by BSSID.
    fn access_points(&self) -> StoreFuture<'_, Vec<AccessPoint>>;
    /// The access point with this (lower-case) BSSID.
    fn access_point<'a>(&'a self, bssid: &'a str) -> StoreFuture<'a, Option<AccessPoint>>;
    /// The newest open incident of this device (what a phone's cancel annotates).
    fn open_incident_of<'a>(&'a self, device_id: &'a str) -> StoreFuture<'a, Option<Uuid>>;
}
