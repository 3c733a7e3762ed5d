//! The `dc09` channel: forwarding incidents to an alarm central station as SIA DC-09 frames
//! carrying Ademco Contact ID (`ADM-CID`), over TCP (STANDARDS.md §1, §2; docs/integrations.md
//! "SIA DC-09 (central stations)").
//!
//! - A real incident: `1122 GG CCC` (silent panic; `1121` with `duress_code = true`); a self-test
//!   `1601 GG CCC`; both with the location in one `[L…]` x-data block and the transmission
//!   timestamp. The group and zone come from the channel's `zones` mapping.
//! - Deliveries go through the outbox like every channel (persisted before they are sent; a
//!   failed attempt is retried with the worker's backoff). A delivery counts only when the
//!   central station ACKs *its* sequence number and account.
//! - A NAK carrying the central station's clock: the clock offset is corrected and the frame sent
//!   again at once (at most [`NAK_ROUNDS`] times per attempt). A bare `"NAK"` or a DUH ("cannot
//!   process"): recorded as a failed attempt, retried only on the worker's backoff (no storm).
//! - NULL supervision messages every `null_interval_s` ([`supervise`]), skipped while other
//!   frames keep the link busy.

pub mod frame;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::channels::{Message, SendError, Sent};
pub use crate::config::{Dc09Channel, Dc09Zone};

/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the central station has to answer a frame (the 20 s a third-party reading of DC-09
/// §5.6.1.1 recommends, STANDARDS.md §1.10).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(20);
/// NAK-and-resend rounds within one attempt.
pub const NAK_ROUNDS: u32 = 3;
/// The longest location text sent in x-data (DC-09 allows 256; receivers that read 1000 bytes
/// per frame, like pysiaalarm, need the whole frame well under that).
pub const MAX_XDATA: usize = 200;

impl Dc09Channel {
    /// The Contact ID group and zone for a location.
    pub fn group_zone(&self, loc: &duress_core::Location) -> (u8, u16) {
        let hit = self.zones.iter().find(|z| {
            let m = |want: &Option<String>, have: &Option<String>| {
                want.as_deref().is_none_or(|w| have.as_deref() == Some(w))
            };
            m(&z.building, &loc.bld) && m(&z.floor, &loc.flr) && m(&z.room, &loc.room)
        });
        match hit {
            Some(z) => (z.group.unwrap_or(self.group), z.zone),
            None => (self.group, self.zone),
        }
    }

    /// The event's qualifier and Contact ID code.
    pub fn contact_id(&self, msg: &Message) -> Result<(u8, u16), String> {
        let alarm = if self.duress_code { 121 } else { 122 };
        match msg.facts.reason.as_str() {
            "incident" => Ok((1, alarm)),
            "test" => Ok((1, 601)),
            // The restore of an alarm this channel reported (qualifier 3).
            "resolved" => Ok((3, alarm)),
            other => Err(format!(
                "a dc09 channel does not carry {other:?} notifications"
            )),
        }
    }

    fn header(&self, token: &str, encrypted: bool, seq: u16) -> String {
        format!(
            "\"{}{token}\"{seq:04}{}{}#{}[",
            if encrypted { "*" } else { "" },
            self.receiver_prefix.as_deref().unwrap_or(""),
            self.line_prefix,
            self.account
        )
    }

    /// The frame body of one `ADM-CID` event (from `"` to before `<CR>`); `inner` is what
    /// follows the `[` of a plain frame: `#acct|QXYZ GG CCC][L…]_timestamp`.
    fn body(&self, token: &str, seq: u16, inner: &str) -> Result<String, String> {
        match &self.aes_key {
            None => Ok(format!("{}{inner}", self.header(token, false, seq))),
            Some(key) => {
                // The cleartext: pad, then `|` before the data (a NULL has no data: no `|`).
                let rest = if token == "NULL" {
                    inner.to_owned()
                } else {
                    format!("|{inner}")
                };
                let mut clear = frame::pad_for(rest.len());
                clear.extend_from_slice(rest.as_bytes());
                let cipher = frame::encrypt(key.expose().as_bytes(), &clear)?;
                Ok(format!(
                    "{}{}",
                    self.header(token, true, seq),
                    hex::encode_upper(cipher)
                ))
            }
        }
    }

    /// The body of an event frame.
    #[allow(clippy::too_many_arguments)]
    pub fn event_body(
        &self,
        seq: u16,
        qualifier: u8,
        code: u16,
        group: u8,
        zone: u16,
        location: &str,
        at: OffsetDateTime,
    ) -> Result<String, String> {
        let mut inner = format!(
            "#{}|{qualifier}{code:03} {group:02} {zone:03}]",
            self.account
        );
        let loc = xdata_text(location);
        if !loc.is_empty() {
            inner.push_str(&format!("[L{loc}]"));
        }
        inner.push_str(&frame::timestamp(at));
        self.body("ADM-CID", seq, &inner)
    }

    /// The body of a NULL (link test) frame.
    pub fn null_body(&self, seq: u16, at: OffsetDateTime) -> Result<String, String> {
        self.body("NULL", seq, &format!("]{}", frame::timestamp(at)))
    }

    fn key_bytes(&self) -> Option<&[u8]> {
        self.aes_key.as_ref().map(|k| k.expose().as_bytes())
    }
}

/// A location as x-data text: printable ASCII only (many receivers read frames as ASCII and
/// fail the CRC otherwise, STANDARDS.md §1.6), without the `[`, `]` and `|` that delimit
/// blocks, at most [`MAX_XDATA`] characters.
pub fn xdata_text(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '[' => '(',
            ']' => ')',
            '|' => '/',
            c if (' '..='~').contains(&c) => c,
            c if c.is_whitespace() => ' ',
            _ => '?',
        })
        .take(MAX_XDATA)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Each central station's link state: its sequence counter, the clock offset learnt from its
/// NAKs, and when a frame last reached it.
#[derive(Debug, Default)]
pub struct Links(Mutex<HashMap<String, LinkState>>);

#[derive(Debug, Default, Clone)]
struct LinkState {
    seq: u16,
    offset: time::Duration,
    last_ack: Option<Instant>,
    last_try: Option<Instant>,
}

impl Links {
    fn with<T>(&self, name: &str, f: impl FnOnce(&mut LinkState) -> T) -> T {
        // A poisoned lock only means a panic mid-update of plain values.
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(name.to_owned()).or_default())
    }

    /// The next sequence number: 0001 to 9999, then 0001 again.
    pub fn next_seq(&self, name: &str) -> u16 {
        self.with(name, |s| {
            s.seq = if s.seq >= 9999 { 1 } else { s.seq + 1 };
            s.seq
        })
    }

    /// The central station's clock minus ours, as learnt from its last NAK.
    pub fn offset(&self, name: &str) -> time::Duration {
        self.with(name, |s| s.offset)
    }

    fn set_offset(&self, name: &str, offset: time::Duration) {
        self.with(name, |s| s.offset = offset);
    }

    fn acked(&self, name: &str) {
        self.with(name, |s| s.last_ack = Some(Instant::now()));
    }

    fn tried(&self, name: &str) {
        self.with(name, |s| s.last_try = Some(Instant::now()));
    }

    /// How long until a NULL is due: `interval` after the last ACKed frame or the last NULL
    /// tried (so a failing link is tested once per interval, not in a loop).
    fn null_due_in(&self, name: &str, interval: Duration) -> Duration {
        self.with(name, |s| {
            let last = match (s.last_ack, s.last_try) {
                (Some(a), Some(t)) => Some(a.max(t)),
                (a, t) => a.or(t),
            };
            last.map_or(Duration::ZERO, |l| interval.saturating_sub(l.elapsed()))
        })
    }
}

/// What a central station answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Ack,
    /// With the central station's time when the NAK carried one.
    Nak(Option<OffsetDateTime>),
    Duh,
    /// Anything else (a wrong sequence, an unreadable answer): the reason.
    Bad(String),
}

/// Reads an answer to the frame with `seq` sent for `channel`.
pub fn classify(raw: &[u8], channel: &Dc09Channel, seq: u16) -> Answer {
    let f = match frame::parse(raw) {
        Ok(f) => f,
        Err(e) => return Answer::Bad(format!("unreadable answer: {e}")),
    };
    match f.token.as_str() {
        "NAK" => Answer::Nak(f.timestamp()),
        "DUH" => Answer::Duh,
        "ACK" | "RSP" => {
            let want = format!("{seq:04}");
            if f.seq.as_deref() != Some(want.as_str()) {
                return Answer::Bad(format!(
                    "ACK for sequence {}, not {want}",
                    f.seq.as_deref().unwrap_or("(none)")
                ));
            }
            match &f.account {
                Some(frame::Account::Hash(a)) if a.eq_ignore_ascii_case(&channel.account) => {}
                _ => return Answer::Bad("ACK for another account".into()),
            }
            if f.encrypted
                && let Some(key) = channel.key_bytes()
            {
                // An encrypted ACK must decrypt under our key (to a `]…_timestamp` tail).
                let ok = f
                    .rest
                    .strip_prefix('[')
                    .and_then(|h| hex::decode(h).ok())
                    .and_then(|c| frame::decrypt(key, &c).ok())
                    .is_some_and(|clear| clear.contains(&b']'));
                if !ok {
                    return Answer::Bad("an encrypted ACK that does not decrypt".into());
                }
            }
            Answer::Ack
        }
        other => Answer::Bad(format!("unexpected answer {other:?}")),
    }
}

fn err(message: impl Into<String>) -> SendError {
    SendError {
        http_status: None,
        message: message.into(),
    }
}

/// Sends one frame on a new TCP connection and reads one answer: up to the first `<CR>`, or
/// an unframed `"TOKEN"` (pysiaalarm's bare NAK carries no CR).
pub async fn exchange(host: &str, port: u16, frame: &[u8]) -> Result<Vec<u8>, SendError> {
    let mut stream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    .map_err(|_| err("connecting timed out"))?
    .map_err(|e| err(format!("connection failed ({})", e.kind())))?;
    let _ = stream.set_nodelay(true);
    stream
        .write_all(frame)
        .await
        .map_err(|e| err(format!("sending failed ({})", e.kind())))?;
    let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    // Bounded: at most a frame's worth of bytes, and the deadline.
    while buf.len() <= frame::MAX_BODY + 16 {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .map_err(|_| err("no answer from the central station within 20 s"))?
            .map_err(|e| err(format!("reading the answer failed ({})", e.kind())))?;
        if n == 0 {
            return Err(err(
                "the central station closed the connection without answering",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(cr) = buf.iter().position(|&b| b == b'\r') {
            let start = buf[..cr]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1);
            let answer = buf[start..cr].to_vec();
            if answer.is_empty() {
                // pysiaalarm answers `\n\r` to a frame it could not read (a CRC failure).
                return Err(err("the central station rejected the frame (empty answer)"));
            }
            return Ok(answer);
        }
        let trimmed = buf.trim_ascii();
        if trimmed.len() >= 5
            && trimmed.len() <= 6
            && trimmed.first() == Some(&b'"')
            && trimmed.last() == Some(&b'"')
        {
            return Ok(trimmed.to_vec());
        }
    }
    Err(err("the answer is too long"))
}

/// One delivery: the event frame, NAK rounds with the corrected clock, the ACK checked.
pub async fn send(links: &Links, ch: &Dc09Channel, msg: &Message) -> Result<Sent, SendError> {
    let (qualifier, code) = ch.contact_id(msg).map_err(err)?;
    let (group, zone) = ch.group_zone(&msg.facts.location);
    let label = msg.label();
    let seq = links.next_seq(&ch.name);
    exchange_rounds(links, ch, seq, |at| {
        ch.event_body(seq, qualifier, code, group, zone, &label, at)
    })
    .await
}

/// One NULL supervision message.
pub async fn send_null(links: &Links, ch: &Dc09Channel) -> Result<Sent, SendError> {
    let seq = links.next_seq(&ch.name);
    exchange_rounds(links, ch, seq, |at| ch.null_body(seq, at)).await
}

async fn exchange_rounds(
    links: &Links,
    ch: &Dc09Channel,
    seq: u16,
    body: impl Fn(OffsetDateTime) -> Result<String, String>,
) -> Result<Sent, SendError> {
    for _ in 0..NAK_ROUNDS {
        let at = crate::clock::receiver_now().saturating_add(links.offset(&ch.name));
        let wire = frame::wrap(&body(at).map_err(err)?).map_err(err)?;
        let answer = exchange(&ch.host, ch.port, &wire).await?;
        match classify(&answer, ch, seq) {
            Answer::Ack => {
                links.acked(&ch.name);
                return Ok(Sent::Delivered(None));
            }
            Answer::Nak(Some(theirs)) => {
                let offset = theirs - crate::clock::receiver_now();
                tracing::warn!(channel = %ch.name, offset_s = offset.whole_seconds(),
                    "dc09: NAK with the central station's time; clock offset corrected, resending");
                links.set_offset(&ch.name, offset);
            }
            Answer::Nak(None) => {
                return Err(err(
                    "NAK without a timestamp (the central station does not know the account, \
                     the key, or could not read the frame)",
                ));
            }
            Answer::Duh => {
                return Err(err(
                    "DUH: the central station could not process the message (code or account \
                     not supported there)",
                ));
            }
            Answer::Bad(why) => return Err(err(why)),
        }
    }
    Err(err(format!(
        "NAK {NAK_ROUNDS} times even with the clock corrected from its NAKs"
    )))
}

/// NULL supervision of every `dc09` channel with `null_interval_s > 0`, one task each; runs
/// until aborted. A NULL is due `null_interval_s` after the last ACKed frame (an alarm keeps
/// the link tested too); a failed one is logged and tried again one interval later.
pub async fn supervise(config: Arc<crate::config::ReceiverConfig>, links: Arc<Links>) {
    let mut tasks = tokio::task::JoinSet::new();
    for c in &config.channels {
        let crate::config::ChannelConfig::Dc09(ch) = c else {
            continue;
        };
        if ch.null_interval_s == 0 {
            continue;
        }
        let (ch, links) = (ch.clone(), links.clone());
        tasks.spawn(async move {
            let interval = Duration::from_secs(ch.null_interval_s);
            loop {
                tokio::time::sleep(links.null_due_in(&ch.name, interval)).await;
                if !links.null_due_in(&ch.name, interval).is_zero() {
                    continue;
                }
                links.tried(&ch.name);
                match send_null(&links, &ch).await {
                    Ok(_) => tracing::debug!(channel = %ch.name, "dc09: NULL acknowledged"),
                    Err(e) => tracing::warn!(channel = %ch.name, error = %e.message,
                        "dc09: NULL supervision message failed"),
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    std::future::pending::<()>().await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn channel(key: Option<&str>) -> Dc09Channel {
        let mut text = String::from(
            "name = \"cs\"\nhost = \"127.0.0.1\"\nport = 7777\naccount = \"1234\"\n\
             receiver_prefix = \"R0\"\nline_prefix = \"L0\"\n\
             [[zones]]\nbuilding = \"A\"\nroom = \"214\"\ngroup = 2\nzone = 214\n",
        );
        if let Some(k) = key {
            text = text.replace("port", &format!("aes_key = \"{k}\"\nport"));
        }
        let c: Dc09Channel = toml::from_str(&text).unwrap();
        c.check().unwrap();
        c
    }

    #[test]
    fn plain_event_frame() {
        let c = channel(None);
        let at = time::macros::datetime!(2026-12-01 18:00:00 UTC);
        let body = c
            .event_body(1, 1, 122, 1, 214, "Bldg A Fl 2 Rm 214", at)
            .unwrap();
        assert_eq!(
            body,
            "\"ADM-CID\"0001R0L0#1234[#1234|1122 01 214][LBldg A Fl 2 Rm 214]_18:00:00,12-01-2026"
        );
        let wire = frame::wrap(&body).unwrap();
        let f = frame::parse(&wire).unwrap();
        assert_eq!(f.encode().unwrap(), wire);
        assert_eq!(f.timestamp(), Some(at));
    }

    #[test]
    fn encrypted_event_frame_decrypts_to_pad_bar_data() {
        for key in [
            "0123456789abcdef",
            "0123456789abcdef01234567",
            "0123456789abcdef0123456789abcdef",
        ] {
            let c = channel(Some(key));
            let at = time::macros::datetime!(2026-12-01 18:00:00 UTC);
            let body = c.event_body(7, 1, 122, 1, 0, "Room 1", at).unwrap();
            assert!(body.starts_with("\"*ADM-CID\"0007R0L0#1234["), "{body}");
            let f = frame::parse(&frame::wrap(&body).unwrap()).unwrap();
            let clear =
                frame::decrypt(key.as_bytes(), &hex::decode(&f.rest[1..]).unwrap()).unwrap();
            let clear = String::from_utf8(clear).unwrap();
            let (pad, rest) = clear.split_once('|').unwrap();
            assert!((16..32).contains(&pad.len()), "{clear}");
            assert_eq!(rest, "#1234|1122 01 000][LRoom 1]_18:00:00,12-01-2026");
            let null = c.null_body(8, at).unwrap();
            let f = frame::parse(&frame::wrap(&null).unwrap()).unwrap();
            let clear =
                frame::decrypt(key.as_bytes(), &hex::decode(&f.rest[1..]).unwrap()).unwrap();
            assert!(clear.ends_with(b"]_18:00:00,12-01-2026"));
        }
    }

    #[test]
    fn zones_and_codes() {
        let mut c = channel(None);
        let mut loc = duress_core::Location {
            bld: Some("A".into()),
            room: Some("214".into()),
            ..Default::default()
        };
        assert_eq!(c.group_zone(&loc), (2, 214));
        loc.room = Some("215".into());
        assert_eq!(c.group_zone(&loc), (1, 0));
        let mut msg = Message {
            id: "n".into(),
            facts: crate::store::NotificationFacts {
                reason: "incident".into(),
                incident_id: None,
                event_id: None,
                device_id: "d".into(),
                kind: "duress".into(),
                location: loc,
                host: Default::default(),
                at: OffsetDateTime::UNIX_EPOCH,
                alarm_at: None,
            },
            press_count: None,
            incident_url: None,
            ladder: None,
            step: 0,
            repeat_index: 0,
        };
        assert_eq!(c.contact_id(&msg).unwrap(), (1, 122));
        c.duress_code = true;
        assert_eq!(c.contact_id(&msg).unwrap(), (1, 121));
        msg.facts.reason = "test".into();
        assert_eq!(c.contact_id(&msg).unwrap(), (1, 601));
        msg.facts.reason = "resolved".into();
        assert_eq!(c.contact_id(&msg).unwrap(), (3, 121));
        msg.facts.reason = "offline".into();
        assert!(c.contact_id(&msg).is_err());
    }

    #[test]
    fn bad_settings_are_refused_without_showing_the_key() {
        let c = channel(None);
        let mut bad = c.clone();
        bad.aes_key = Some(Secret::new("SECRETKEY-15chr"));
        let e = bad.check().unwrap_err();
        assert!(e.contains("aes_key") && !e.contains("SECRETKEY"), "{e}");
        let mut good = c.clone();
        good.aes_key = Some(Secret::new("SECRETKEY-16char"));
        assert!(!format!("{good:?}").contains("SECRETKEY"));
        assert!(!good.redacted_target().contains("SECRETKEY"));
        for (field, f) in [
            (
                "account",
                Box::new(|c: &mut Dc09Channel| c.account = "12g4".into())
                    as Box<dyn Fn(&mut Dc09Channel)>,
            ),
            (
                "account",
                Box::new(|c: &mut Dc09Channel| c.account = "12".into()),
            ),
            (
                "receiver_prefix",
                Box::new(|c: &mut Dc09Channel| c.receiver_prefix = Some("0".into())),
            ),
            (
                "line_prefix",
                Box::new(|c: &mut Dc09Channel| c.line_prefix = "L".into()),
            ),
            ("zone", Box::new(|c: &mut Dc09Channel| c.zone = 1000)),
            (
                "null_interval_s",
                Box::new(|c: &mut Dc09Channel| c.null_interval_s = 5),
            ),
        ] {
            let mut b = c.clone();
            f(&mut b);
            assert!(b.check().unwrap_err().contains(field), "{field}");
        }
    }

    #[test]
    fn answers_are_classified() {
        let c = channel(None);
        let ack = frame::wrap("\"ACK\"0005R0L0#1234[]").unwrap();
        assert_eq!(classify(&ack, &c, 5), Answer::Ack);
        assert!(matches!(classify(&ack, &c, 6), Answer::Bad(_)));
        let other = frame::wrap("\"ACK\"0005R0L0#9999[]").unwrap();
        assert!(matches!(classify(&other, &c, 5), Answer::Bad(_)));
        assert_eq!(classify(b"\"NAK\"", &c, 5), Answer::Nak(None));
        let nak = frame::wrap("\"NAK\"0000L0R0A0[]_16:20:01,09-24-2025").unwrap();
        assert_eq!(
            classify(&nak, &c, 5),
            Answer::Nak(Some(time::macros::datetime!(2025-09-24 16:20:01 UTC)))
        );
        let duh = frame::wrap("\"DUH\"0005R0L0#1234[]").unwrap();
        assert_eq!(classify(&duh, &c, 5), Answer::Duh);
    }

    #[test]
    fn xdata_is_safe_ascii() {
        assert_eq!(xdata_text(" Raum [3] | Süd\n"), "Raum (3) / S?d");
        assert_eq!(xdata_text(&"x".repeat(500)).len(), MAX_XDATA);
    }

    #[test]
    fn the_contract_channel_loads_and_misplaced_ones_are_refused() {
        let channel = "[[channels]]\nname = \"central-station\"\nkind = \"dc09\"\n\
                       host = \"127.0.0.1\"\nport = 7777\naccount = \"1234\"\n\
                       receiver_prefix = \"R0\"\nline_prefix = \"L0\"\n\
                       aes_key = \"0123456789ABCDEF\"\nduress_code = false\n\
                       null_interval_s = 60\n";
        let ok = format!(
            "{channel}[[ladders]]\nname = \"default\"\n\
             steps = [ {{ after_s = 0, channels = [\"central-station\"] }} ]\n"
        );
        let cfg = crate::config::ReceiverConfig::parse(&ok).unwrap();
        let c = cfg.channel("central-station").unwrap();
        assert_eq!(c.kind(), "dc09");
        assert!(!format!("{cfg:?}").contains("0123456789ABCDEF"));
        assert!(!c.redacted_target().contains("0123456789ABCDEF"));
        let later = ok.replace("after_s = 0", "after_s = 60");
        let e = crate::config::ReceiverConfig::parse(&later).unwrap_err();
        assert!(e.contains("after_s = 0"), "{e}");
        let repeated = ok.replace("after_s = 0,", "after_s = 0, repeat = 1,");
        assert!(crate::config::ReceiverConfig::parse(&repeated).is_err());
        let sup = format!("{ok}[supervision]\nchannels = [\"central-station\"]\n");
        let e = crate::config::ReceiverConfig::parse(&sup).unwrap_err();
        assert!(e.contains("dc09"), "{e}");
        let typo = ok.replace("duress_code", "duress_cod");
        assert!(crate::config::ReceiverConfig::parse(&typo).is_err());
        let short = ok.replace("0123456789ABCDEF", "0123456789ABCDE");
        let e = crate::config::ReceiverConfig::parse(&short).unwrap_err();
        assert!(
            e.contains("aes_key") && !e.contains("0123456789ABCDE"),
            "{e}"
        );
    }

    #[test]
    fn sequence_wraps_after_9999() {
        let l = Links::default();
        assert_eq!(l.next_seq("a"), 1);
        l.with("a", |s| s.seq = 9998);
        assert_eq!(l.next_seq("a"), 9999);
        assert_eq!(l.next_seq("a"), 1);
    }
}
