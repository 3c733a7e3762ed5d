//! Read-only queries behind the admin commands.

use std::collections::HashMap;

use sqlx::Row as _;
use sqlx::sqlite::{SqlitePool, SqliteRow};
use uuid::Uuid;

use super::rows::{from_json, kind, parse_uuid, source, status, unsigned};
use crate::records::{
    DeviceRecord, EventRecord, ExportedAck, ExportedEvent, IncidentEvent, IncidentRecord,
};
use crate::store::{IncidentFilter, StoreResult, cancel_pin_of, parse_ts};

pub(super) fn opt_ts(row: &SqliteRow, column: &str) -> StoreResult<Option<time::OffsetDateTime>> {
    row.try_get::<Option<String>, _>(column)?
        .map(|t| parse_ts(&t))
        .transpose()
}

pub(super) fn ts(row: &SqliteRow, column: &str) -> StoreResult<time::OffsetDateTime> {
    parse_ts(&row.try_get::<String, _>(column)?)
}

fn opt_u64(row: &SqliteRow, column: &str) -> StoreResult<Option<u64>> {
    row.try_get::<Option<i64>, _>(column)?
        .map(|v| unsigned(column, v))
        .transpose()
}

pub(super) fn json<T: serde::de::DeserializeOwned>(
    row: &SqliteRow,
    column: &str,
) -> StoreResult<T> {
    from_json(column, &row.try_get::<String, _>(column)?)
}

pub(super) async fn devices(pool: &SqlitePool) -> StoreResult<Vec<DeviceRecord>> {
    let rows = sqlx::query("SELECT * FROM devices ORDER BY enrolled_at, device_id")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| {
            Ok(DeviceRecord {
                device_id: row.try_get("device_id")?,
                status: status(&row.try_get::<String, _>("status")?)?,
                public_jwk: json(row, "public_jwk")?,
                key_thumbprint: row.try_get("key_thumbprint")?,
                hostname: row.try_get("hostname")?,
                host: json(row, "host_json")?,
                location: json(row, "location_json")?,
                agent_version: row.try_get("agent_version")?,
                enrolled_at: ts(row, "enrolled_at")?,
                last_heartbeat_at: opt_ts(row, "last_heartbeat_at")?,
                hotkey: row
                    .try_get::<Option<String>, _>("hotkey_json")?
                    .map(|t| from_json("hotkey_json", &t))
                    .transpose()?,
                queued: opt_u64(row, "queued")?,
                reported_last_seq: opt_u64(row, "reported_last_seq")?,
                last_seq: opt_u64(row, "last_seq")?,
                last_event_at: opt_ts(row, "last_event_at")?,
                last_self_test_at: opt_ts(row, "last_self_test_at")?,
                last_self_test_id: row
                    .try_get::<Option<String>, _>("last_self_test_id")?
                    .map(|t| parse_uuid(&t))
                    .transpose()?,
                policy_source: row.try_get("policy_source")?,
                policy_sha256: row.try_get("policy_sha256")?,
                registered_location: row
                    .try_get::<Option<String>, _>("registered_location_json")?
                    .map(|t| from_json("registered_location_json", &t))
                    .transpose()?,
                last_addr: row.try_get("last_addr")?,
                retired_at: opt_ts(row, "retired_at")?,
                retired_by: row.try_get("retired_by")?,
                alarm_refused: row.try_get("alarm_refused")?,
            })
        })
        .collect()
}

pub(super) fn event_record(row: &SqliteRow) -> StoreResult<EventRecord> {
    let event_kind = kind(&row.try_get::<String, _>("kind")?)?;
    Ok(EventRecord {
        id: parse_uuid(&row.try_get::<String, _>("id")?)?,
        device_id: row.try_get("device_id")?,
        incident_id: row
            .try_get::<Option<String>, _>("incident_id")?
            .map(|t| parse_uuid(&t))
            .transpose()?,
        seq: unsigned("seq", row.try_get("seq")?)?,
        kind: event_kind,
        source: source(&row.try_get::<String, _>("source")?)?,
        occurred_at: ts(row, "occurred_at")?,
        sent_at: ts(row, "sent_at")?,
        received_at: ts(row, "received_at")?,
        delayed: row.try_get("delayed")?,
        delay_ms: row.try_get("delay_ms")?,
        location: json(row, "location_json")?,
        host: json(row, "host_json")?,
        cancel_pin: cancel_pin_of(event_kind, &row.try_get::<String, _>("jws")?),
        client_addr: row.try_get("client_addr")?,
    })
}

pub(super) async fn events(pool: &SqlitePool) -> StoreResult<Vec<EventRecord>> {
    let rows = sqlx::query("SELECT * FROM events ORDER BY received_at, rowid")
        .fetch_all(pool)
        .await?;
    rows.iter().map(event_record).collect()
}

pub(super) async fn incidents(
    pool: &SqlitePool,
    filter: IncidentFilter,
) -> StoreResult<Vec<IncidentRecord>> {
    let (incidents_sql, events_sql) = match filter {
        IncidentFilter::All => (
            "SELECT * FROM incidents ORDER BY opened_at, incident_id",
            "SELECT * FROM events WHERE incident_id IS NOT NULL ORDER BY received_at, rowid",
        ),
        IncidentFilter::Open => (
            "SELECT * FROM incidents WHERE status = 'open' ORDER BY opened_at, incident_id",
            "SELECT e.* FROM events e JOIN incidents i ON i.incident_id = e.incident_id
             WHERE i.status = 'open' ORDER BY e.received_at, e.rowid",
        ),
    };
    // Two reads in one snapshot, so no event appears without its incident or vice versa.
    let mut tx = pool.begin().await?;
    let incident_rows = sqlx::query(incidents_sql).fetch_all(&mut *tx).await?;
    let event_rows = sqlx::query(events_sql).fetch_all(&mut *tx).await?;
    tx.commit().await?;

    let mut timelines: HashMap<Uuid, Vec<IncidentEvent>> = HashMap::new();
    for row in &event_rows {
        let e = event_record(row)?;
        if let Some(incident_id) = e.incident_id {
            timelines
                .entry(incident_id)
                .or_default()
                .push(IncidentEvent::from(e));
        }
    }
    incident_rows
        .iter()
        .map(|row| {
            let mut incident = incident_record(row)?;
            incident.set_events(timelines.remove(&incident.incident_id).unwrap_or_default());
            Ok(incident)
        })
        .collect()
}

/// An `incidents` row, without its events.
pub(super) fn incident_record(row: &SqliteRow) -> StoreResult<IncidentRecord> {
    let text = |c: &str| row.try_get::<Option<String>, _>(c);
    Ok(IncidentRecord {
        incident_id: parse_uuid(&row.try_get::<String, _>("incident_id")?)?,
        device_id: row.try_get("device_id")?,
        status: row.try_get("status")?,
        opened_at: ts(row, "opened_at")?,
        first_occurred_at: ts(row, "first_occurred_at")?,
        last_press_at: ts(row, "last_press_at")?,
        press_count: unsigned("press_count", row.try_get("press_count")?)?,
        kind: kind(&row.try_get::<String, _>("kind")?)?,
        source: source(&row.try_get::<String, _>("source")?)?,
        location: json(row, "location_json")?,
        host: json(row, "host_json")?,
        delayed: row.try_get("delayed")?,
        delay_ms: row.try_get("delay_ms")?,
        cancelled_at: opt_ts(row, "cancelled_at")?,
        claimed_by: text("claimed_by")?,
        claimed_at: opt_ts(row, "claimed_at")?,
        first_claimed_at: opt_ts(row, "first_claimed_at")?,
        escalated_at: opt_ts(row, "escalated_at")?,
        response_level: text("response_level")?,
        called_911_at: opt_ts(row, "called_911_at")?,
        resolved_at: opt_ts(row, "resolved_at")?,
        resolved_by: text("resolved_by")?,
        disposition: text("disposition")?,
        follow_up: text("follow_up")?,
        cancel_with_duress_pin: false,
        events: Vec::new(),
        registered_location: None,
        location_mismatch: false,
        location_drift: None,
    })
}

pub(super) async fn export(pool: &SqlitePool) -> StoreResult<Vec<ExportedEvent>> {
    let rows = sqlx::query(
        "SELECT e.*, d.public_jwk FROM events e JOIN devices d ON d.device_id = e.device_id
         ORDER BY e.received_at, e.rowid",
    )
    .fetch_all(pool)
    .await?;
    // Acknowledgements are only ever added, with or after their event: any that belongs to an
    // event listed above is read here.
    let ack_rows =
        sqlx::query("SELECT event_id, kid, public_jwk, sig, signed_at FROM event_acks ORDER BY n")
            .fetch_all(pool)
            .await?;
    let mut acks: std::collections::HashMap<Uuid, Vec<ExportedAck>> = Default::default();
    for a in &ack_rows {
        acks.entry(parse_uuid(&a.try_get::<String, _>("event_id")?)?)
            .or_default()
            .push(ExportedAck {
                kid: a.try_get("kid")?,
                jwk: super::rows::from_json(
                    "event_acks.public_jwk",
                    &a.try_get::<String, _>("public_jwk")?,
                )?,
                sig: a.try_get("sig")?,
                signed_at: ts(a, "signed_at")?,
            });
    }
    rows.iter()
        .map(|row| {
            let id = parse_uuid(&row.try_get::<String, _>("id")?)?;
            Ok(ExportedEvent {
                id,
                incident_id: row
                    .try_get::<Option<String>, _>("incident_id")?
                    .map(|s| parse_uuid(&s))
                    .transpose()?,
                acks: acks.remove(&id).unwrap_or_default(),
                device_id: row.try_get("device_id")?,
                kind: kind(&row.try_get::<String, _>("kind")?)?,
                seq: unsigned("seq", row.try_get("seq")?)?,
                occurred_at: ts(row, "occurred_at")?,
                received_at: ts(row, "received_at")?,
                delayed: row.try_get("delayed")?,
                delay_ms: row.try_get("delay_ms")?,
                jws: row.try_get("jws")?,
                public_jwk: json(row, "public_jwk")?,
            })
        })
        .collect()
}
