//! Linux (and the BSDs): TOML files.
//!
//! - machine: `/etc/duress/agent.toml`, then every `/etc/duress/agent.d/*.toml` in file-name
//!   order (`10-site.toml` before `50-building.toml`), each overriding the ones before — so
//!   configuration management can drop a site file and a per-building file side by side;
//! - user: `$XDG_CONFIG_HOME/duress/agent.toml` (else `~/.config/duress/agent.toml`), filtered
//!   (see [`super`]).
//!
//! A relative `ca_cert` is resolved against the directory of the file that names it.

use std::path::{Path, PathBuf};

use super::{Layer, LoadedPolicy, resolve};
use crate::{Error, Result};

/// Where the Linux layers live.
#[derive(Debug, Clone)]
pub struct LinuxPaths {
    /// `/etc/duress`: `agent.toml` and `agent.d/`.
    pub etc_dir: PathBuf,
    /// The user's own file, if there is a user directory.
    pub user: Option<PathBuf>,
}

impl LinuxPaths {
    /// The real locations.
    pub fn system() -> LinuxPaths {
        LinuxPaths {
            etc_dir: PathBuf::from("/etc/duress"),
            user: dirs::config_dir().map(|d| d.join("duress").join("agent.toml")),
        }
    }
}

/// Reads every layer under `paths` and merges them.
pub fn load_from(paths: &LinuxPaths) -> Result<LoadedPolicy> {
    let primary = paths.etc_dir.join("agent.toml");
    let mut machine = Vec::new();
    if let Some(l) = read_toml_layer(&primary)? {
        machine.push(l);
    }
    let drop_in = paths.etc_dir.join("agent.d");
    if drop_in.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&drop_in)
            .map_err(|e| Error::Policy {
                origin: drop_in.display().to_string(),
                message: format!("cannot list: {e}"),
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        for f in files {
            if let Some(l) = read_toml_layer(&f)? {
                machine.push(l);
            }
        }
    }
    if machine.is_empty() {
        tracing::warn!(path = %primary.display(), "no policy file; using an empty policy");
    }
    let user = match &paths.user {
        Some(p) => match read_toml_layer(p) {
            Ok(l) => l,
            Err(e) => {
                // A broken user file never stops the agent: it could only set the location.
                tracing::warn!("user settings ignored: {e}");
                None
            }
        },
        None => None,
    };
    resolve(machine, user, primary)
}

/// One TOML file as a layer; `None` when it does not exist.
pub fn read_toml_layer(path: &Path) -> Result<Option<Layer>> {
    let origin = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Policy {
                origin,
                message: format!("cannot read: {e}"),
            });
        }
    };
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| Error::Policy {
        origin: origin.clone(),
        message: e.to_string(),
    })?;
    if let Some(dir) = path.parent() {
        resolve_relative_ca(&mut table, dir);
    }
    Ok(Some(Layer { origin, table }))
}

fn resolve_relative_ca(table: &mut toml::Table, dir: &Path) {
    let Some(toml::Value::Array(receivers)) = table.get_mut("receivers") else {
        return;
    };
    for r in receivers {
        if let Some(toml::Value::String(ca)) = r.get_mut("ca_cert")
            && Path::new(ca.as_str()).is_relative()
        {
            *ca = dir.join(&*ca).display().to_string();
        }
    }
}
