//! Location → camera links. An admin maps a location (building, floor, room, a label prefix,
//! or any location) to a URL template such as
//! `https://vms.example.edu/live?bld={BLD}&floor={FLR}&room={ROOM}`; the incident page shows a
//! link for every mapping that matches the incident's location. Substituted values are
//! percent-encoded, and only `http`/`https` templates are accepted, so a location label can
//! neither break out of the URL nor turn a link into `javascript:`.

use duress_core::Location;

use crate::store::{Store, StoreResult};

pub use crate::store::CameraMapping;

pub const MATCH_FIELDS: &[&str] = &["BLD", "FLR", "ROOM", "label_prefix", "any"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraLink {
    pub name: String,
    pub url: String,
}

/// Accepts only absolute http(s) templates.
pub fn check_template(template: &str) -> Result<(), String> {
    let lower = template.trim().to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return Err("A camera URL must start with https:// or http://".into());
    }
    if template.chars().any(char::is_control) || template.contains(' ') {
        return Err("A camera URL cannot contain spaces or control characters".into());
    }
    Ok(())
}

/// RFC 3986 unreserved characters stay, everything else is %XX (UTF-8).
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn field<'a>(location: &'a Location, name: &str) -> Option<&'a str> {
    match name {
        "BLD" => location.bld.as_deref(),
        "FLR" => location.flr.as_deref(),
        "ROOM" => location.room.as_deref(),
        _ => None,
    }
}

impl CameraMapping {
    fn matches(&self, location: &Location) -> bool {
        match self.match_field.as_str() {
            "any" => true,
            "label_prefix" => location.label.as_deref().is_some_and(|l| {
                l.to_lowercase()
                    .starts_with(&self.match_value.to_lowercase())
            }),
            f => {
                field(location, f).is_some_and(|v| v.eq_ignore_ascii_case(self.match_value.trim()))
            }
        }
    }

    /// The link for `location`, or `None` when the template is not (or no longer) acceptable.
    pub fn link(&self, location: &Location) -> Option<CameraLink> {
        check_template(&self.url_template).ok()?;
        let mut url = self.url_template.clone();
        for name in ["BLD", "FLR", "ROOM"] {
            let value = field(location, name).unwrap_or("");
            url = url.replace(&format!("{{{name}}}"), &percent_encode(value));
        }
        Some(CameraLink {
            name: self.name.clone(),
            url,
        })
    }
}

/// The camera links of every mapping that matches `location`.
pub async fn links_for(store: &dyn Store, location: &Location) -> StoreResult<Vec<CameraLink>> {
    Ok(store
        .camera_mappings()
        .await?
        .iter()
        .filter(|m| m.matches(location))
        .filter_map(|m| m.link(location))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_encoded_and_only_http_is_allowed() {
        let m = CameraMapping {
            id: 1,
            match_field: "BLD".into(),
            match_value: "a".into(),
            name: "Lobby".into(),
            url_template: "https://vms.example/live?b={BLD}&r={ROOM}".into(),
        };
        let loc = Location {
            bld: Some("A".into()),
            room: Some("2&x=\"<1>".into()),
            ..Default::default()
        };
        assert!(m.matches(&loc));
        assert_eq!(
            m.link(&loc).map(|l| l.url).as_deref(),
            Some("https://vms.example/live?b=A&r=2%26x%3D%22%3C1%3E")
        );
        assert!(check_template("javascript:alert(1)").is_err());
        assert!(check_template(" JAVASCRIPT:alert(1)").is_err());
        assert!(check_template("data:text/html,x").is_err());
        assert!(check_template("HTTPS://ok.example/{ROOM}").is_ok());
    }
}
