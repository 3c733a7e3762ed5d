//! The SIEM feed (docs/operations.md, "SIEM feed"): every audit entry and every incident state
//! change, to each `[[siem]]` sink of the configuration file, as RFC 5424 syslog over TCP
//! (octet-counted, RFC 6587) or TLS (RFC 5425), or as JSON lines appended to a file.
//!
//! Durable without a row per record: the records *are* the audit log and the live log
//! (`console_events`), each written in the transaction of its change (an acknowledged alarm's
//! `incident.press` row commits with the alarm) and numbered in commit order. Each sink has a
//! position in the store (`siem_cursors`): a worker per sink reads what lies after it, sends
//! it in order, and moves the position only once the sink has taken it — a syslog collector
//! that read our whole batch up to our end of the connection and closed its side (RFC 6587 has
//! no acknowledgement: a collector that only received bytes into a socket buffer has not taken
//! them), a file whose appended lines were synced. A receiver killed anywhere in between sends
//! the batch again after its restart: at least once, never lost, and a resent record carries
//! the same `id`, so the SIEM can drop the repeat. Failures are retried with the notifier's
//! backoff. The feed runs apart from the alarm path: ingest writes nothing more for it.
//!
//! Why not a row per record in the `notifications` outbox: it would add a write per sink to
//! every audited change and every alarm's transaction (the alarm path), and the outbox worker
//! delivers rows in parallel, so records would reach the collector out of order.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::config::{JsonlSink, SiemConfig, SyslogSink};
use crate::store::{AuditEntry, LiveRow, Store};

/// The schema name every record carries; a change that is not backwards-compatible gets a new
/// number.
pub const SCHEMA: &str = "duress.siem/1";
/// How often a sink looks for new records when it is caught up.
pub const TICK: Duration = Duration::from_millis(250);
/// How often a node that does not feed a sink tries to take its cluster lease.
const LEASE_RETRY: Duration = Duration::from_secs(1);
/// Records per batch (per source).
const BATCH: u32 = 500;
/// One batch's connect, write and close may take this long.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// RFC 5424 facility 13, "log audit".
const FACILITY: u8 = 13;
/// The SD-ID of the structured-data element: `duress@32473` (32473 is the private enterprise
/// number RFC 5612 reserves for examples; a site that forwards by SD-ID matches on it).
const SD_ID: &str = "duress@32473";

/// One record of the feed.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// `audit-<id>` or `incident-<id>`: stable, the same in every resend.
    pub id: String,
    pub source: &'static str,
    pub seq: i64,
    /// RFC 3339, UTC, milliseconds.
    pub at: String,
    /// `incident.press`, `incident.claim`, `user.add`, … (the audit action or the change's kind).
    pub kind: String,
    /// Syslog severity: 1 (alert) for a press, 5 (notice) for the rest.
    pub severity: u8,
    pub json: Value,
}

impl Record {
    pub fn from_audit(e: &AuditEntry, receiver: &str) -> Self {
        let id = format!("audit-{}", e.id);
        Record {
            json: json!({
                "schema": SCHEMA,
                "id": id,
                "source": "audit",
                "seq": e.id,
                "at": e.at,
                "receiver": receiver,
                "kind": e.action,
                "actor": e.actor,
                "subject": e.subject,
                "detail": e.detail,
                "hash": e.hash,
                "prev_hash": e.prev_hash,
            }),
            id,
            source: "audit",
            seq: e.id,
            at: e.at.clone(),
            kind: e.action.clone(),
            severity: 5,
        }
    }

    /// An incident state change (a live-log row whose kind starts with `incident.`).
    pub fn from_live(r: &LiveRow, receiver: &str) -> Self {
        let id = format!("incident-{}", r.id);
        let at = crate::store::format_ts(r.at);
        let data: Value = serde_json::from_str(&r.payload).unwrap_or(Value::Null);
        Record {
            json: json!({
                "schema": SCHEMA,
                "id": id,
                "source": "incident",
                "seq": r.id,
                "at": at,
                "receiver": receiver,
                "kind": r.kind,
                "incident_id": r.incident_id,
                "data": data,
            }),
            id,
            source: "incident",
            seq: r.id,
            at,
            kind: r.kind.clone(),
            severity: if r.kind == "incident.press" { 1 } else { 5 },
        }
    }

    /// The JSON line (no newline).
    pub fn json_line(&self) -> String {
        self.json.to_string()
    }

    /// The RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME - MSGID [SD] BOM JSON`.
    pub fn syslog_message(&self, hostname: &str) -> String {
        let pri = u16::from(FACILITY) * 8 + u16::from(self.severity);
        format!(
            "<{pri}>1 {at} {host} duress-receiver - {msgid} [{SD_ID} id=\"{id}\" source=\"{source}\" seq=\"{seq}\"] \u{feff}{json}",
            at = self.at,
            host = header_field(hostname, 255),
            msgid = header_field(&self.kind, 32),
            id = sd_escape(&self.id),
            source = self.source,
            seq = self.seq,
            json = self.json_line(),
        )
    }
}

/// A header field (HOSTNAME, MSGID): printable US-ASCII without spaces, at most `max` long
/// (RFC 5424 §6); anything else becomes `_`, an empty one `-`.
fn header_field(s: &str, max: usize) -> String {
    let out: String = s
        .chars()
        .take(max)
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .collect();
    if out.is_empty() { "-".to_owned() } else { out }
}

/// An SD-PARAM value: `"`, `\` and `]` escaped (RFC 5424 §6.3.3).
fn sd_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One RFC 6587 octet-counted frame: `LEN SP MSG`.
pub fn frame(message: &str) -> Vec<u8> {
    let mut out = format!("{} ", message.len()).into_bytes();
    out.extend_from_slice(message.as_bytes());
    out
}

/// The next batch after `position`, in order: audit entries and incident changes merged by
/// time (each source keeps its own order), and the position after it (non-incident live rows
/// are passed over). `None` when there is nothing new.
pub async fn next_batch(
    store: &dyn Store,
    position: (i64, i64),
    receiver: &str,
) -> crate::store::StoreResult<Option<(Vec<Record>, (i64, i64))>> {
    let audit = store.audit_after(position.0, BATCH).await?;
    let live = store.live_after(position.1, BATCH).await?;
    if audit.is_empty() && live.is_empty() {
        return Ok(None);
    }
    let next = (
        audit.last().map_or(position.0, |e| e.id),
        live.last().map_or(position.1, |r| r.id),
    );
    let mut records: Vec<Record> = audit
        .iter()
        .map(|e| Record::from_audit(e, receiver))
        .collect();
    records.extend(
        live.iter()
            .filter(|r| r.kind.starts_with("incident."))
            .map(|r| Record::from_live(r, receiver)),
    );
    // Stable: within one time, audit entries first, each source in its own order. The text
    // times sort as times (one fixed format, UTC, milliseconds).
    records.sort_by(|a, b| a.at.cmp(&b.at).then(a.source.cmp(b.source)));
    Ok(Some((records, next)))
}

/// Feeds one sink until aborted.
pub async fn run(store: Arc<dyn Store>, sink: SiemConfig, retry_base: Duration) {
    let name = sink.name().to_owned();
    let receiver = gethostname::gethostname().to_string_lossy().into_owned();
    let tls = match &sink {
        SiemConfig::Syslog(s) if s.tls => match tls_connector(s) {
            Ok(c) => Some(c),
            Err(e) => {
                // The configuration was checked at start; only an unreadable trust store
                // gets here. Nothing is sent, and the records wait in the store.
                tracing::error!(sink = %name, error = %e, "siem: cannot build the TLS client; nothing is sent");
                return;
            }
        },
        _ => None,
    };
    let mut failures: u32 = 0;
    // One node feeds each sink for the cluster (docs/scale-out.md): two nodes reading the
    // same position would send every record twice. The others take over when it dies.
    let lease_name = format!("siem:{name}");
    let mut lease = store.cluster_lease(&lease_name);
    let mut held = false;
    loop {
        if !crate::store::hold_lease(lease.as_mut(), &mut held, &lease_name).await {
            tokio::time::sleep(LEASE_RETRY).await;
            continue;
        }
        let result = async {
            let position = store
                .siem_position(&name)
                .await
                .map_err(|e| e.to_string())?;
            let Some((records, next)) = next_batch(&*store, position, &receiver)
                .await
                .map_err(|e| e.to_string())?
            else {
                return Ok(false);
            };
            if !records.is_empty() {
                tokio::time::timeout(
                    ATTEMPT_TIMEOUT,
                    send(&sink, tls.as_ref(), &records, &receiver),
                )
                .await
                .map_err(|_| "timed out".to_owned())??;
                tracing::debug!(sink = %name, records = records.len(), "siem: batch sent");
            }
            store
                .siem_advance(&name, next.0, next.1, crate::clock::receiver_now())
                .await
                .map_err(|e| e.to_string())?;
            Ok::<bool, String>(true)
        }
        .await;
        match result {
            // More may be waiting: go on at once.
            Ok(true) => failures = 0,
            Ok(false) => {
                failures = 0;
                tokio::time::sleep(TICK).await;
            }
            Err(e) => {
                let wait = super::channels::backoff(retry_base, Duration::from_secs(300), failures);
                failures = failures.saturating_add(1);
                tracing::warn!(sink = %name, error = %e, attempts = failures,
                    retry_in_ms = wait.as_millis() as u64, "siem: sending failed; will retry");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

async fn send(
    sink: &SiemConfig,
    tls: Option<&tokio_rustls::TlsConnector>,
    records: &[Record],
    receiver: &str,
) -> Result<(), String> {
    match sink {
        SiemConfig::Syslog(s) => send_syslog(s, tls, records, receiver).await,
        SiemConfig::Jsonl(j) => append_jsonl(j, records).await,
    }
}

async fn send_syslog(
    sink: &SyslogSink,
    tls: Option<&tokio_rustls::TlsConnector>,
    records: &[Record],
    receiver: &str,
) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect(&sink.address)
        .await
        .map_err(|e| format!("connecting to {}: {e}", sink.address))?;
    let _ = tcp.set_nodelay(true);
    let mut bytes = Vec::new();
    for r in records {
        bytes.extend(frame(&r.syslog_message(receiver)));
    }
    match tls {
        Some(connector) => {
            let name = sink
                .server_name
                .as_deref()
                .unwrap_or(sink.host())
                .to_owned();
            let server_name = rustls_pki_types::ServerName::try_from(name)
                .map_err(|e| format!("server name: {e}"))?;
            let stream = connector
                .connect(server_name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {}: {e}", sink.address))?;
            write_and_wait_close(stream, &bytes).await
        }
        None => write_and_wait_close(tcp, &bytes).await,
    }
}

/// Writes the batch, ends our side (TLS close_notify, TCP FIN) and waits for the collector to
/// close its side: only then has it read everything we sent.
async fn write_and_wait_close<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    bytes: &[u8],
) -> Result<(), String> {
    stream
        .write_all(bytes)
        .await
        .map_err(|e| format!("writing: {e}"))?;
    stream.flush().await.map_err(|e| format!("writing: {e}"))?;
    stream
        .shutdown()
        .await
        .map_err(|e| format!("closing: {e}"))?;
    let mut sink = [0u8; 512];
    // Bounded by the caller's timeout; a collector sends nothing back in RFC 6587.
    loop {
        match stream.read(&mut sink).await {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            // A TLS peer that closes without close_notify: it still read to our end.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(format!("waiting for the collector to close: {e}")),
        }
    }
}

async fn append_jsonl(sink: &JsonlSink, records: &[Record]) -> Result<(), String> {
    use std::io::Write as _;
    let path = sink.path.clone();
    let mut text = String::new();
    for r in records {
        text.push_str(&r.json_line());
        text.push('\n');
    }
    tokio::task::spawn_blocking(move || {
        let mut text = text;
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true).read(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options
            .open(&path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        // A receiver killed mid-append left a partial last line: end it, so the batch's
        // resend starts on a line of its own (a reader skips the one line that is not JSON).
        if ends_mid_line(&mut file).map_err(|e| format!("reading {}: {e}", path.display()))? {
            text.insert(0, '\n');
        }
        file.write_all(text.as_bytes())
            .map_err(|e| format!("appending to {}: {e}", path.display()))?;
        file.sync_data()
            .map_err(|e| format!("syncing {}: {e}", path.display()))
    })
    .await
    .map_err(|e| format!("the file task failed: {e}"))?
}

/// Whether the file's last byte is not a newline (a partial line).
fn ends_mid_line(file: &mut std::fs::File) -> std::io::Result<bool> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    // In append mode writes go to the end whatever the position; reading needs it set.
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

/// The TLS client of a syslog sink: the OS trust store plus its `ca_cert` (as the HTTP
/// channels, `super::http`).
fn tls_connector(sink: &SyslogSink) -> Result<tokio_rustls::TlsConnector, String> {
    let config = super::http::tls_client_config(sink.ca_cert.as_deref())?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn frames_count_octets_and_fields_are_escaped() {
        assert_eq!(frame("é"), b"2 \xc3\xa9".to_vec());
        assert_eq!(sd_escape(r#"a"b\c]"#), r#"a\"b\\c\]"#);
        assert_eq!(header_field("incident claim", 32), "incident_claim");
        assert_eq!(header_field("", 32), "-");
    }

    #[tokio::test]
    async fn a_partial_last_line_is_ended_before_the_next_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("siem.jsonl");
        std::fs::write(&path, "{\"id\":\"audit-1\"}\n{\"id\":\"aud").unwrap();
        let record = Record {
            id: "audit-2".into(),
            source: "audit",
            seq: 2,
            at: "2026-12-01T15:00:00.000Z".into(),
            kind: "user.add".into(),
            severity: 5,
            json: json!({"id": "audit-2"}),
        };
        let sink = JsonlSink {
            name: "file".into(),
            path: path.clone(),
        };
        append_jsonl(&sink, std::slice::from_ref(&record))
            .await
            .unwrap();
        append_jsonl(&sink, &[record]).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"id\":\"audit-1\"}\n{\"id\":\"aud\n{\"id\":\"audit-2\"}\n{\"id\":\"audit-2\"}\n"
        );
    }
}
