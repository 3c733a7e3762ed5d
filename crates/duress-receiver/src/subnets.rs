//! The subnet map at work: the client address of API requests (what heartbeats and events
//! record), and incidents annotated with their station's registered location, a differing
//! claim and location drift. The rules themselves are in [`crate::location_evidence`], a
//! leaf module, re-exported here.

pub use crate::location_evidence::*;

/// Fills in what an incident shows of its station's registration and of network evidence:
/// the station's registered location (as registered now), whether the first press's claimed
/// location differs from it, and the first press whose address drifts from the registered
/// (else claimed) location. Done above the store, from its devices and subnet map, so both
/// backends and every reader (board, incident page, `incidents list --json`) agree.
pub fn annotate_incidents(
    incidents: &mut [crate::records::IncidentRecord],
    devices: &[crate::records::DeviceRecord],
    subnets: &[Subnet],
) {
    for i in incidents {
        let registered = devices
            .iter()
            .find(|d| d.device_id == i.device_id)
            .and_then(|d| d.registered_location.clone());
        i.location_mismatch = registered
            .as_ref()
            .is_some_and(|r| locations_differ(r, &i.location));
        let expected = registered.as_ref().unwrap_or(&i.location);
        i.location_drift = i
            .events
            .iter()
            .find_map(|e| drift(subnets, e.client_addr.as_deref(), expected));
        i.registered_location = registered;
    }
}

/// [`annotate_incidents`] with the store's current devices and subnet map.
pub async fn annotate_from(
    store: &dyn crate::store::Store,
    incidents: &mut [crate::records::IncidentRecord],
) -> crate::store::StoreResult<()> {
    if incidents.is_empty() {
        return Ok(());
    }
    let devices = store.list_devices().await?;
    let subnets = store.subnets().await?;
    annotate_incidents(incidents, &devices, &subnets);
    Ok(())
}

/// The client address of a request as the receiver's accept loop saw it (`ConnectInfo`),
/// IPv4-mapped IPv6 shown as IPv4; `None` when the request did not come through it. Behind a
/// reverse proxy this is the proxy's address (docs/deployment.md): drift needs direct
/// connections.
#[derive(Debug, Clone, Default)]
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl ClientAddr {
    /// The address for per-address limits (`0.0.0.0` when unknown: all unknowns share one).
    pub fn ip(&self) -> std::net::IpAddr {
        self.0.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into())
    }

    /// The address as stored with heartbeats and events.
    pub fn text(&self) -> Option<String> {
        self.0.map(|ip| ip.to_string())
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip().to_canonical()),
        ))
    }
}
