//! Location → camera links, from one of two sources (never both):
//!
//! - **The configuration file's `vms` channels** (`camera_url` on a `[[channels.requests]]`
//!   entry): the same per-location mapping that tells the camera system to pop the room's
//!   cameras also gives the console's link to them, so the two cannot disagree. When any
//!   `vms` request of the file has a `camera_url`, the file is the only source.
//! - Otherwise, **mappings an admin keeps in the console** (`/admin/cameras`, in the store):
//!   a location (building, floor, room, a label prefix, or any location) → a URL template.
//!
//! Either way templates look like `https://vms.example.edu/live?bld={BLD}&floor={FLR}&room={ROOM}`;
//! substituted values are percent-encoded, and only `http`/`https` templates are accepted, so
//! a location label can neither break out of the URL nor turn a link into `javascript:`.

use duress_core::Location;

use crate::config::{ChannelConfig, ReceiverConfig};
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
        Some(CameraLink {
            name: self.name.clone(),
            url: fill(&self.url_template, location)?,
        })
    }
}

/// `template` with `{BLD}`, `{FLR}`, `{ROOM}` percent-encoded from `location`; `None` when the
/// template is not acceptable.
fn fill(template: &str, location: &Location) -> Option<String> {
    check_template(template).ok()?;
    let mut url = template.to_owned();
    for name in ["BLD", "FLR", "ROOM"] {
        let value = field(location, name).unwrap_or("");
        url = url.replace(&format!("{{{name}}}"), &percent_encode(value));
    }
    Some(url)
}

/// Whether the configuration file is the source of camera links (a `vms` request with a
/// `camera_url`); the console's own mappings are then not used.
pub fn config_is_source(config: Option<&ReceiverConfig>) -> bool {
    config.is_some_and(|c| {
        c.channels.iter().any(|ch| {
            matches!(ch, ChannelConfig::Vms(v) if v.requests.iter().any(|r| r.camera_url.is_some()))
        })
    })
}

/// The file's links for `location`: per `vms` channel, the request the channel would send for
/// this location (the first whose building and room match), if it has a `camera_url`.
pub fn config_links(config: &ReceiverConfig, location: &Location) -> Vec<CameraLink> {
    config
        .channels
        .iter()
        .filter_map(|ch| match ch {
            ChannelConfig::Vms(v) => crate::notify::channels::vms_request_at(v, location),
            _ => None,
        })
        .filter_map(|r| {
            Some(CameraLink {
                name: r.camera_name.clone().unwrap_or_else(|| "Cameras".into()),
                url: fill(r.camera_url.as_deref()?, location)?,
            })
        })
        .collect()
}

/// The camera links for `location`: from the configuration file when it is the source,
/// otherwise every console mapping that matches.
pub async fn links_for(
    store: &dyn Store,
    config: Option<&ReceiverConfig>,
    location: &Location,
) -> StoreResult<Vec<CameraLink>> {
    if let Some(c) = config.filter(|c| config_is_source(Some(c))) {
        return Ok(config_links(c, location));
    }
    Ok(store
        .camera_mappings()
        .await?
        .iter()
        .filter(|m| m.matches(location))
        .filter_map(|m| m.link(location))
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn links_come_from_the_vms_request_the_location_selects() {
        let config = ReceiverConfig::parse(
            r#"
[[channels]]
name = "milestone"
kind = "vms"
[[channels.requests]]
building = "A"
room = "214"
url = "https://vms.example.edu/api/events?room=214"
camera_url = "https://vms.example.edu/view/room-214"
camera_name = "Room 214 cameras"
[[channels.requests]]
building = "A"
url = "https://vms.example.edu/api/events?bld={BLD}"
camera_url = "https://vms.example.edu/view?bld={BLD}&floor={FLR}"
[[channels.requests]]
url = "https://vms.example.edu/api/events?any"
"#,
        )
        .unwrap();
        assert!(config_is_source(Some(&config)));
        let at = |bld: &str, flr: &str, room: &str| Location {
            bld: Some(bld.into()),
            flr: Some(flr.into()),
            room: Some(room.into()),
            ..Default::default()
        };
        assert_eq!(
            config_links(&config, &at("A", "2", "214")),
            vec![CameraLink {
                name: "Room 214 cameras".into(),
                url: "https://vms.example.edu/view/room-214".into()
            }]
        );
        assert_eq!(
            config_links(&config, &at("A", "3 & up", "301")),
            vec![CameraLink {
                name: "Cameras".into(),
                url: "https://vms.example.edu/view?bld=A&floor=3%20%26%20up".into()
            }]
        );
        // The request for other buildings has no camera_url: no link.
        assert!(config_links(&config, &at("B", "1", "9")).is_empty());
        let e = ReceiverConfig::parse(
            "[[channels]]\nname = \"v\"\nkind = \"vms\"\n[[channels.requests]]\n\
             url = \"https://vms.example.edu/\"\ncamera_url = \"javascript:alert(1)\"\n",
        )
        .unwrap_err();
        assert!(e.contains("camera_url"), "{e}");
        assert!(!config_is_source(None));
    }

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
