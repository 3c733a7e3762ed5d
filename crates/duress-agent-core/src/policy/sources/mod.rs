//! Where the policy comes from on each OS, and how the layers combine into one [`Policy`].
//!
//! One typed schema, one name per key on every OS (see `docs/deployment.md` for the table):
//!
//! | OS | layers, lowest precedence first |
//! |---|---|
//! | Linux | `/etc/duress/agent.toml`, then `/etc/duress/agent.d/*.toml` in name order; user: `$XDG_CONFIG_HOME/duress/agent.toml` |
//! | Windows | `HKLM\SOFTWARE\Duress\Agent` (installer), then `HKLM\SOFTWARE\Policies\Duress\Agent` (GPO/Intune); user: `HKCU\Software\Duress\Agent` |
//! | macOS | `/Library/Preferences/org.duress.agent.plist`, then `/Library/Managed Preferences/org.duress.agent.plist`, then `/Library/Managed Preferences/<user>/org.duress.agent.plist` (MDM); user: `~/Library/Preferences/org.duress.agent.plist` |
//!
//! Each machine layer is turned into a `toml::Table` (registry keys and plist dictionaries map
//! one to one onto TOML tables, see [`windows`] and [`macos`]), checked on its own through the
//! very same [`Policy::from_toml_str`] (so an unknown key or a bad value is an error naming the
//! layer it is in), and merged over the layers below it: a higher layer's keys override, tables
//! merge key by key, arrays (`receivers`, `hotkey.chords`) replace as a whole.
//!
//! The user layer comes last and is filtered: it may set `[location]` (which then replaces the
//! machine location as a whole) and only while the machine policy says
//! `[tray] allow_user_location = true`. Everything else in it — a receiver URL above all — is
//! ignored and logged with a warning naming the key: a user can never redirect alarms. A broken
//! user layer is ignored (and logged) rather than stopping the agent.

pub mod linux;
pub mod macos;
pub mod schema;
pub mod windows;

use std::path::PathBuf;

use crate::policy::Policy;
use crate::{Error, Result};

pub use schema::{Key, Kind, keys};
/// The table types layers are made of (so tests and tools need no `toml` dependency of their own).
pub use toml::{Table as TomlTable, Value as TomlValue};

/// One layer of policy, as TOML, with the place it came from (for errors and `status`).
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// The file path or registry key this layer was read from.
    pub origin: String,
    pub table: toml::Table,
}

/// The merged policy and how it was made.
#[derive(Debug, Clone)]
pub struct LoadedPolicy {
    pub policy: Policy,
    /// The machine policy location the OS reads first (for messages).
    pub primary: PathBuf,
    /// Every layer that existed, lowest precedence first (the user layer last, if any).
    pub layers: Vec<String>,
    /// User settings that were ignored, as `origin: key (why)`; each was also logged.
    pub ignored: Vec<String>,
}

/// A value from an OS store before it is given its schema type.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw {
    Str(String),
    Int(i64),
    Bool(bool),
    List(Vec<Raw>),
    /// Anything else, by its type name (`REG_BINARY`, `date`, …): always an error.
    Other(String),
}

/// Types `raw` as `key` wants it. `Ok(None)` for an empty string, which every OS store treats as
/// "not set" (the MSI writes an empty value for a property that was not given).
pub fn typed_value(key: &Key, raw: Raw) -> std::result::Result<Option<toml::Value>, String> {
    let want = match key.kind {
        Kind::Str | Kind::Enum(_) => "a string",
        Kind::Int => "an integer (DWORD) or a string of digits",
        Kind::Bool => "a boolean, 0/1 (DWORD) or \"true\"/\"false\"",
        Kind::StrList => "a list of strings or one `;`-separated string",
    };
    let bad = |got: &str| Err(format!("{} must be {want}, got {got}", key.name));
    if let Raw::Str(s) = &raw
        && s.trim().is_empty()
    {
        return Ok(None);
    }
    let value = match (key.kind, raw) {
        (Kind::Str | Kind::Enum(_), Raw::Str(s)) => toml::Value::String(s),
        (Kind::Int, Raw::Int(n)) => toml::Value::Integer(n),
        (Kind::Int, Raw::Str(s)) => match s.trim().parse::<i64>() {
            Ok(n) => toml::Value::Integer(n),
            Err(_) => return bad(&format!("{s:?}")),
        },
        (Kind::Bool, Raw::Bool(b)) => toml::Value::Boolean(b),
        (Kind::Bool, Raw::Int(0)) => toml::Value::Boolean(false),
        (Kind::Bool, Raw::Int(1)) => toml::Value::Boolean(true),
        (Kind::Bool, Raw::Str(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" => toml::Value::Boolean(true),
            "0" | "false" | "no" => toml::Value::Boolean(false),
            _ => return bad(&format!("{s:?}")),
        },
        (Kind::StrList, Raw::Str(s)) => {
            let items: Vec<toml::Value> = s
                .split(';')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(|c| toml::Value::String(c.to_owned()))
                .collect();
            if items.is_empty() {
                return Ok(None);
            }
            toml::Value::Array(items)
        }
        (Kind::StrList, Raw::List(items)) => {
            let mut out = Vec::new();
            for item in items {
                match item {
                    Raw::Str(s) if !s.trim().is_empty() => out.push(toml::Value::String(s)),
                    Raw::Str(_) => {}
                    other => return bad(&format!("a list holding {}", raw_type(&other))),
                }
            }
            if out.is_empty() {
                return Ok(None);
            }
            toml::Value::Array(out)
        }
        (_, other) => return bad(raw_type(&other)),
    };
    Ok(Some(value))
}

fn raw_type(raw: &Raw) -> &str {
    match raw {
        Raw::Str(_) => "a string",
        Raw::Int(_) => "an integer",
        Raw::Bool(_) => "a boolean",
        Raw::List(_) => "a list",
        Raw::Other(t) => t,
    }
}

/// Merges `over` into `base`: tables merge key by key, every other value (arrays included)
/// replaces the one below.
pub fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Parses and validates `table` exactly as a policy file is (unknown keys named), with `origin`.
pub fn parse_table(table: &toml::Table, origin: &str) -> Result<Policy> {
    let text = toml::to_string(table).map_err(|e| Error::Policy {
        origin: origin.to_owned(),
        message: format!("cannot re-encode as TOML: {e}"),
    })?;
    Policy::from_toml_str(&text, origin)
}

/// The merge and the user filter (see the module docs). `machine` is lowest precedence first.
pub fn resolve(machine: Vec<Layer>, user: Option<Layer>, primary: PathBuf) -> Result<LoadedPolicy> {
    let mut merged = toml::Table::new();
    let mut layers = Vec::new();
    for layer in machine {
        // Each layer on its own first, so an error names the layer it is in.
        parse_table(&layer.table, &layer.origin)?;
        merge(&mut merged, layer.table);
        layers.push(layer.origin);
    }
    let origin = if layers.is_empty() {
        "(no policy)".to_owned()
    } else {
        layers.join(" + ")
    };
    let machine_policy = parse_table(&merged, &origin)?;
    let mut ignored = Vec::new();
    if let Some(user) = user {
        layers.push(user.origin.clone());
        let allow = machine_policy.tray.allow_user_location;
        let (location, rejected) = filter_user(user.table, allow);
        for key in rejected {
            let why = if key == "location" || key.starts_with("location.") {
                "the policy does not allow users to set the location"
            } else {
                "a user may only set [location], and only where the policy allows it"
            };
            tracing::warn!(origin = %user.origin, key = %key, "user setting ignored: {why}");
            ignored.push(format!("{}: {key} ({why})", user.origin));
        }
        if let Some(location) = location {
            let mut only = toml::Table::new();
            only.insert("location".into(), location.clone());
            match parse_table(&only, &user.origin) {
                Ok(_) => {
                    let mut with_user = merged.clone();
                    with_user.insert("location".into(), location);
                    let policy = parse_table(&with_user, &format!("{origin} + {}", user.origin))?;
                    return Ok(LoadedPolicy {
                        policy,
                        primary,
                        layers,
                        ignored,
                    });
                }
                Err(e) => {
                    tracing::warn!(origin = %user.origin, "user location ignored: {e}");
                    ignored.push(format!("{}: location ({e})", user.origin));
                }
            }
        }
    }
    Ok(LoadedPolicy {
        policy: machine_policy,
        primary,
        layers,
        ignored,
    })
}

/// Splits a user layer into the location it may set (if allowed) and the dotted names of every
/// key it may not.
fn filter_user(table: toml::Table, allow_location: bool) -> (Option<toml::Value>, Vec<String>) {
    let mut location = None;
    let mut rejected = Vec::new();
    for (k, v) in table {
        if k == "location" && allow_location {
            location = Some(v);
        } else {
            leaf_names(&k, &v, &mut rejected);
        }
    }
    (location, rejected)
}

/// `receivers[0].url`, `tray.allow_quit`, … for every leaf under `prefix`.
fn leaf_names(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
    match v {
        toml::Value::Table(t) if !t.is_empty() => {
            for (k, v) in t {
                leaf_names(&format!("{prefix}.{k}"), v, out);
            }
        }
        toml::Value::Array(a) if a.iter().all(toml::Value::is_table) && !a.is_empty() => {
            for (i, v) in a.iter().enumerate() {
                leaf_names(&format!("{prefix}[{i}]"), v, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

/// Loads the policy from this OS's sources.
#[cfg(any(target_os = "linux", target_os = "freebsd", target_os = "openbsd"))]
pub fn load_os() -> Result<LoadedPolicy> {
    linux::load_from(&linux::LinuxPaths::system())
}

/// Loads the policy from this OS's sources.
#[cfg(windows)]
pub fn load_os() -> Result<LoadedPolicy> {
    windows::load_from(&windows::SystemRegistry)
}

/// Loads the policy from this OS's sources.
#[cfg(target_os = "macos")]
pub fn load_os() -> Result<LoadedPolicy> {
    macos::load_from(&macos::MacPaths::system())
}

/// Other OSes: no managed policy source; a file must be named with `--policy`.
#[cfg(not(any(
    target_os = "linux",
    target_os = "freebsd",
    target_os = "openbsd",
    windows,
    target_os = "macos"
)))]
pub fn load_os() -> Result<LoadedPolicy> {
    Err(Error::Policy {
        origin: "(OS policy)".into(),
        message: format!(
            "this OS has no managed policy source (unsupported); pass --policy FILE or set {}",
            super::ENV_POLICY
        ),
    })
}

#[cfg(test)]
mod tests;
