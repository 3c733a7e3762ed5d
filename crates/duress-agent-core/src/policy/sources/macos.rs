//! macOS: property lists for the preference domain `org.duress.agent`.
//!
//! - machine config: `/Library/Preferences/org.duress.agent.plist` (the PKG or an admin);
//! - managed (MDM profile, e.g. Jamf): `/Library/Managed Preferences/org.duress.agent.plist`
//!   (device scope), then `/Library/Managed Preferences/<user>/org.duress.agent.plist`
//!   (user-scoped payloads — still pushed by IT, so still policy);
//! - user: `~/Library/Preferences/org.duress.agent.plist`, filtered (see [`super`]).
//!
//! Mapping: the root dictionary holds one dictionary per TOML table with the same key names
//! (`location` → `label`, `BLD`, …), `receivers` is an array of dictionaries, `hotkey.chords` an
//! array of strings (a `;`-separated string is accepted too), integers are `<integer>`, booleans
//! `<true/>`/`<false/>`. Root keys starting with `Payload` (profile bookkeeping) are skipped.
//! The parser is portable: it is tested on Linux with files; only [`MacPaths::system`] is
//! macOS-specific in what it points at. Binary and XML plists are both read.

use std::path::{Path, PathBuf};

use super::schema;
use super::{Layer, LoadedPolicy, Raw, resolve, typed_value};
use crate::{Error, Result};

/// The preference domain (bundle identifier) of the agent.
pub const DOMAIN: &str = "org.duress.agent";

/// Where the macOS layers live.
#[derive(Debug, Clone)]
pub struct MacPaths {
    pub machine: PathBuf,
    pub managed: PathBuf,
    pub managed_user: Option<PathBuf>,
    pub user: Option<PathBuf>,
}

impl MacPaths {
    /// The real locations for the user running the agent.
    pub fn system() -> MacPaths {
        let file = format!("{DOMAIN}.plist");
        let user_name = whoami::username();
        MacPaths {
            machine: Path::new("/Library/Preferences").join(&file),
            managed: Path::new("/Library/Managed Preferences").join(&file),
            managed_user: (!user_name.is_empty()).then(|| {
                Path::new("/Library/Managed Preferences")
                    .join(user_name)
                    .join(&file)
            }),
            user: dirs::home_dir().map(|h| h.join("Library/Preferences").join(&file)),
        }
    }
}

/// Reads every layer and merges them.
pub fn load_from(paths: &MacPaths) -> Result<LoadedPolicy> {
    let mut machine = Vec::new();
    for p in [
        Some(&paths.machine),
        Some(&paths.managed),
        paths.managed_user.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(l) = read_plist_layer(p)? {
            machine.push(l);
        }
    }
    if machine.is_empty() {
        tracing::warn!(
            "no managed preferences for {DOMAIN} (neither {} nor {}); using an empty policy",
            paths.managed.display(),
            paths.machine.display()
        );
    }
    let user = match &paths.user {
        Some(p) => match read_plist_layer_lenient(p) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("user settings ignored: {e}");
                None
            }
        },
        None => None,
    };
    resolve(machine, user, paths.managed.clone())
}

/// One plist file as a layer; `None` when it does not exist. Unknown keys are errors.
pub fn read_plist_layer(path: &Path) -> Result<Option<Layer>> {
    read(path, true)
}

/// The user's plist: keys outside the schema are kept (so they are reported as ignored by the
/// filter) instead of failing.
fn read_plist_layer_lenient(path: &Path) -> Result<Option<Layer>> {
    read(path, false)
}

fn read(path: &Path, strict: bool) -> Result<Option<Layer>> {
    let origin = path.display().to_string();
    if !path.exists() {
        return Ok(None);
    }
    let err = |message: String| Error::Policy {
        origin: origin.clone(),
        message,
    };
    let value = plist::Value::from_file(path).map_err(|e| err(format!("not a plist: {e}")))?;
    let table = plist_to_table(value, strict).map_err(err)?;
    Ok(Some(Layer { origin, table }))
}

/// Converts a plist root dictionary into a policy table (see the module docs).
pub fn plist_to_table(
    value: plist::Value,
    strict: bool,
) -> std::result::Result<toml::Table, String> {
    let plist::Value::Dictionary(root) = value else {
        return Err("the root of the plist must be a dictionary".into());
    };
    let tables = schema::tables();
    let mut out = toml::Table::new();
    for (name, v) in root {
        if name.starts_with("Payload") {
            continue;
        }
        let Some(&(table, in_array)) = tables.iter().find(|(t, _)| *t == name) else {
            if strict {
                return Err(format!("unknown key {name}"));
            }
            out.insert(name, toml::Value::String("(ignored)".into()));
            continue;
        };
        if in_array {
            let plist::Value::Array(items) = v else {
                return Err(format!("{name} must be an array of dictionaries"));
            };
            let mut arr = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                let plist::Value::Dictionary(d) = item else {
                    return Err(format!("{name}[{i}] must be a dictionary"));
                };
                let t = dict_to_table(table, d, &format!("{name}[{i}]"), strict)?;
                if !t.is_empty() {
                    arr.push(toml::Value::Table(t));
                }
            }
            if !arr.is_empty() {
                out.insert(name, toml::Value::Array(arr));
            }
        } else {
            let plist::Value::Dictionary(d) = v else {
                return Err(format!("{name} must be a dictionary"));
            };
            let t = dict_to_table(table, d, &name, strict)?;
            if !t.is_empty() {
                out.insert(name, toml::Value::Table(t));
            }
        }
    }
    Ok(out)
}

fn dict_to_table(
    table: &str,
    dict: plist::Dictionary,
    at: &str,
    strict: bool,
) -> std::result::Result<toml::Table, String> {
    let mut out = toml::Table::new();
    for (name, v) in dict {
        let Some(key) = schema::find(table, &name) else {
            if strict {
                return Err(format!("{at}: unknown key {name}"));
            }
            out.insert(name, toml::Value::String("(ignored)".into()));
            continue;
        };
        if let Some(v) = typed_value(key, to_raw(v)).map_err(|e| format!("{at}: {e}"))? {
            out.insert(name, v);
        }
    }
    Ok(out)
}

fn to_raw(v: plist::Value) -> Raw {
    match v {
        plist::Value::String(s) => Raw::Str(s),
        plist::Value::Boolean(b) => Raw::Bool(b),
        plist::Value::Integer(i) => match i.as_signed() {
            Some(n) => Raw::Int(n),
            None => Raw::Other("an integer out of range".into()),
        },
        plist::Value::Array(a) => Raw::List(a.into_iter().map(to_raw).collect()),
        plist::Value::Real(_) => Raw::Other("a real number".into()),
        plist::Value::Date(_) => Raw::Other("a date".into()),
        plist::Value::Data(_) => Raw::Other("data".into()),
        plist::Value::Dictionary(_) => Raw::Other("a dictionary".into()),
        _ => Raw::Other("an unsupported plist value".into()),
    }
}
