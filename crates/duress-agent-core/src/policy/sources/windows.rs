//! Windows: the registry.
//!
//! - machine config: `HKLM\SOFTWARE\Duress\Agent` (written by the MSI from its properties);
//! - policy: `HKLM\SOFTWARE\Policies\Duress\Agent` (GPO with the ADMX, Intune), over it;
//! - user: `HKCU\Software\Duress\Agent`, filtered (see [`super`]).
//!
//! Mapping: one subkey per TOML table, one value per key, the same names (matched ignoring case,
//! as the registry does): `…\Agent\location` value `label`, `…\Agent\tray` value `allow_quit`.
//! Receivers are numbered subkeys in policy order: `…\Agent\receivers\0` values `url`, `ca_cert`,
//! `ca_sha256`, then `…\receivers\1`. Strings are REG_SZ (REG_EXPAND_SZ is read as is),
//! integers and booleans REG_DWORD (a REG_SZ of digits / `true` / `false` is accepted, since an
//! MSI property is always a string), `hotkey\chords` one `;`-separated REG_SZ (wixl cannot write
//! REG_MULTI_SZ; a REG_MULTI_SZ is accepted too). An empty string means "not set".
//!
//! The registry is behind [`RegistrySource`]: [`MemoryRegistry`] serves the tests on every OS,
//! `SystemRegistry` (winreg) is the real one, compiled only for Windows.

use std::collections::BTreeMap;

use super::schema;
use super::{Layer, LoadedPolicy, Raw, resolve, typed_value};
use crate::{Error, Result};

/// Machine policy (GPO/Intune), relative to HKLM.
pub const POLICY_KEY: &str = r"SOFTWARE\Policies\Duress\Agent";
/// Machine configuration written by the installer, relative to HKLM.
pub const MACHINE_KEY: &str = r"SOFTWARE\Duress\Agent";
/// User settings, relative to HKCU.
pub const USER_KEY: &str = r"Software\Duress\Agent";

/// A registry hive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hive {
    LocalMachine,
    CurrentUser,
}

impl Hive {
    pub fn prefix(self) -> &'static str {
        match self {
            Hive::LocalMachine => "HKLM",
            Hive::CurrentUser => "HKCU",
        }
    }
}

/// A registry value's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegValue {
    Sz(String),
    ExpandSz(String),
    MultiSz(Vec<String>),
    Dword(u32),
    Qword(u64),
    /// Any other type, by name (`REG_BINARY`, …).
    Other(String),
}

/// Read access to the registry (64-bit view).
pub trait RegistrySource {
    /// The names of the subkeys of `path`, or `None` when `path` does not exist.
    fn subkeys(&self, hive: Hive, path: &str) -> std::io::Result<Option<Vec<String>>>;
    /// The values directly under `path` (empty when it does not exist).
    fn values(&self, hive: Hive, path: &str) -> std::io::Result<Vec<(String, RegValue)>>;
}

/// One key of [`MemoryRegistry`]: its path as written, and its values by lower-case name (each
/// with its name as written).
type MemoryKey = (String, BTreeMap<String, (String, RegValue)>);

/// An in-memory registry (tests; case-insensitive like the real one).
#[derive(Debug, Clone, Default)]
pub struct MemoryRegistry {
    /// (hive, lower-case path) → the key.
    keys: BTreeMap<(Hive, String), MemoryKey>,
}

impl MemoryRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` under `path` (creating the key and its parents).
    pub fn set(&mut self, hive: Hive, path: &str, name: &str, value: RegValue) -> &mut Self {
        self.create_key(hive, path);
        if let Some((_, values)) = self.keys.get_mut(&(hive, path.to_ascii_lowercase())) {
            values.insert(name.to_ascii_lowercase(), (name.to_owned(), value));
        }
        self
    }

    /// Creates `path` and its parents.
    pub fn create_key(&mut self, hive: Hive, path: &str) -> &mut Self {
        let parts: Vec<&str> = path.split('\\').collect();
        for i in 1..=parts.len() {
            let p = parts[..i].join("\\");
            self.keys
                .entry((hive, p.to_ascii_lowercase()))
                .or_insert_with(|| (p.clone(), BTreeMap::new()));
        }
        self
    }
}

impl RegistrySource for MemoryRegistry {
    fn subkeys(&self, hive: Hive, path: &str) -> std::io::Result<Option<Vec<String>>> {
        let lower = path.to_ascii_lowercase();
        if !self.keys.contains_key(&(hive, lower.clone())) {
            return Ok(None);
        }
        let prefix = format!("{lower}\\");
        Ok(Some(
            self.keys
                .iter()
                .filter(|((h, p), _)| *h == hive && p.starts_with(&prefix))
                .filter(|((_, p), _)| !p[prefix.len()..].contains('\\'))
                .map(|(_, (orig, _))| orig[prefix.len()..].to_owned())
                .collect(),
        ))
    }

    fn values(&self, hive: Hive, path: &str) -> std::io::Result<Vec<(String, RegValue)>> {
        Ok(self
            .keys
            .get(&(hive, path.to_ascii_lowercase()))
            .map(|(_, v)| v.values().cloned().collect())
            .unwrap_or_default())
    }
}

/// Reads the three layers and merges them.
pub fn load_from(reg: &dyn RegistrySource) -> Result<LoadedPolicy> {
    let mut machine = Vec::new();
    for root in [MACHINE_KEY, POLICY_KEY] {
        if let Some(l) = read_layer(reg, Hive::LocalMachine, root, true)? {
            machine.push(l);
        }
    }
    if machine.is_empty() {
        tracing::warn!(
            r"no policy in HKLM\{POLICY_KEY} or HKLM\{MACHINE_KEY}; using an empty policy"
        );
    }
    let user = match read_layer(reg, Hive::CurrentUser, USER_KEY, false) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("user settings ignored: {e}");
            None
        }
    };
    resolve(
        machine,
        user,
        std::path::PathBuf::from(format!(r"HKLM\{POLICY_KEY}")),
    )
}

/// One registry tree as a layer; `None` when the key does not exist. With `strict`, a value or
/// subkey outside the schema is an error naming the key it is in; otherwise it is kept as a
/// placeholder so the user filter reports it as ignored.
pub fn read_layer(
    reg: &dyn RegistrySource,
    hive: Hive,
    root: &str,
    strict: bool,
) -> Result<Option<Layer>> {
    let origin = format!(r"{}\{root}", hive.prefix());
    let io = |at: &str, e: std::io::Error| Error::Policy {
        origin: at.to_owned(),
        message: format!("cannot read: {e}"),
    };
    let Some(subkeys) = reg.subkeys(hive, root).map_err(|e| io(&origin, e))? else {
        return Ok(None);
    };
    let unknown = |at: &str, name: &str| Error::Policy {
        origin: at.to_owned(),
        message: format!("unknown key {name}"),
    };
    let mut table = toml::Table::new();
    for (name, _) in reg.values(hive, root).map_err(|e| io(&origin, e))? {
        if strict {
            return Err(unknown(&origin, &name));
        }
        table.insert(name, toml::Value::String("(ignored)".into()));
    }
    let tables = schema::tables();
    for sub in subkeys {
        let at = format!(r"{origin}\{sub}");
        let path = format!(r"{root}\{sub}");
        let Some(&(t, in_array)) = tables.iter().find(|(t, _)| t.eq_ignore_ascii_case(&sub)) else {
            if strict {
                return Err(unknown(&origin, &sub));
            }
            table.insert(sub, toml::Value::String("(ignored)".into()));
            continue;
        };
        if in_array {
            for (name, _) in reg.values(hive, &path).map_err(|e| io(&at, e))? {
                if strict {
                    return Err(unknown(&at, &name));
                }
            }
            let mut items: Vec<(u32, String)> = Vec::new();
            for i in reg
                .subkeys(hive, &path)
                .map_err(|e| io(&at, e))?
                .unwrap_or_default()
            {
                match i.parse::<u32>() {
                    Ok(n) => items.push((n, i)),
                    Err(_) => {
                        return Err(Error::Policy {
                            origin: at.clone(),
                            message: format!(
                                "subkey {i}: receivers are numbered subkeys (0, 1, …) in policy order"
                            ),
                        });
                    }
                }
            }
            items.sort();
            let mut arr = Vec::new();
            for (_, i) in items {
                let t = values_table(
                    reg,
                    hive,
                    &format!(r"{path}\{i}"),
                    &format!(r"{at}\{i}"),
                    t,
                    strict,
                )?;
                if !t.is_empty() {
                    arr.push(toml::Value::Table(t));
                }
            }
            if !arr.is_empty() {
                table.insert(t.to_owned(), toml::Value::Array(arr));
            }
        } else {
            let vt = values_table(reg, hive, &path, &at, t, strict)?;
            if !vt.is_empty() {
                table.insert(t.to_owned(), toml::Value::Table(vt));
            }
        }
    }
    Ok(Some(Layer { origin, table }))
}

/// The values of one registry key, typed by the schema of `table`.
fn values_table(
    reg: &dyn RegistrySource,
    hive: Hive,
    path: &str,
    at: &str,
    table: &str,
    strict: bool,
) -> Result<toml::Table> {
    let err = |message: String| Error::Policy {
        origin: at.to_owned(),
        message,
    };
    if strict
        && let Some(sub) = reg
            .subkeys(hive, path)
            .map_err(|e| err(format!("cannot read: {e}")))?
            .and_then(|s| s.into_iter().next())
    {
        return Err(err(format!("unknown key {sub}")));
    }
    let mut out = toml::Table::new();
    for (name, value) in reg
        .values(hive, path)
        .map_err(|e| err(format!("cannot read: {e}")))?
    {
        let Some(key) = schema::find_ignore_case(table, &name) else {
            if strict {
                return Err(err(format!("unknown key {name}")));
            }
            out.insert(name, toml::Value::String("(ignored)".into()));
            continue;
        };
        if let Some(v) = typed_value(key, to_raw(value)).map_err(err)? {
            out.insert(key.name.to_owned(), v);
        }
    }
    Ok(out)
}

fn to_raw(v: RegValue) -> Raw {
    match v {
        RegValue::Sz(s) | RegValue::ExpandSz(s) => Raw::Str(s),
        RegValue::MultiSz(items) => Raw::List(items.into_iter().map(Raw::Str).collect()),
        RegValue::Dword(n) => Raw::Int(i64::from(n)),
        RegValue::Qword(n) => match i64::try_from(n) {
            Ok(n) => Raw::Int(n),
            Err(_) => Raw::Other("a REG_QWORD out of range".into()),
        },
        RegValue::Other(t) => Raw::Other(t),
    }
}

#[cfg(windows)]
pub use system::SystemRegistry;

/// The real registry, through winreg (64-bit view, read-only).
#[cfg(windows)]
mod system {
    use winreg::RegKey;
    use winreg::enums::{
        HKEY_CURRENT_USER, HKEY_LOCAL_MACHINE, KEY_READ, KEY_WOW64_64KEY, RegType,
    };

    use super::{Hive, RegValue, RegistrySource};

    /// The machine's registry.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct SystemRegistry;

    fn open(hive: Hive, path: &str) -> std::io::Result<Option<RegKey>> {
        let root = RegKey::predef(match hive {
            Hive::LocalMachine => HKEY_LOCAL_MACHINE,
            Hive::CurrentUser => HKEY_CURRENT_USER,
        });
        match root.open_subkey_with_flags(path, KEY_READ | KEY_WOW64_64KEY) {
            Ok(k) => Ok(Some(k)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    impl RegistrySource for SystemRegistry {
        fn subkeys(&self, hive: Hive, path: &str) -> std::io::Result<Option<Vec<String>>> {
            match open(hive, path)? {
                Some(k) => k.enum_keys().collect::<std::io::Result<Vec<_>>>().map(Some),
                None => Ok(None),
            }
        }

        fn values(&self, hive: Hive, path: &str) -> std::io::Result<Vec<(String, RegValue)>> {
            let Some(k) = open(hive, path)? else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for item in k.enum_values() {
                let (name, raw) = item?;
                let value = match raw.vtype {
                    RegType::REG_SZ => RegValue::Sz(k.get_value::<String, _>(&name)?),
                    RegType::REG_EXPAND_SZ => RegValue::ExpandSz(k.get_value::<String, _>(&name)?),
                    RegType::REG_MULTI_SZ => {
                        RegValue::MultiSz(k.get_value::<Vec<String>, _>(&name)?)
                    }
                    RegType::REG_DWORD => RegValue::Dword(k.get_value::<u32, _>(&name)?),
                    RegType::REG_QWORD => RegValue::Qword(k.get_value::<u64, _>(&name)?),
                    other => RegValue::Other(format!("{other:?}")),
                };
                out.push((name, value));
            }
            Ok(out)
        }
    }
}
