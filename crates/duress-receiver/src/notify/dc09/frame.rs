//! SIA DC-09 frames (STANDARDS.md §1.2–§1.5): encoding what we send, and a tolerant parser for
//! what central stations answer.
//!
//! `<LF><crc:4><0LLL>"[*]TOKEN"<seq:4>[R<rcvr>]L<pref>[#<acct>|A<acct>][<data>]…[_<ts>]<CR>`:
//! the CRC (CRC-16/ARC) and the length (a `0` and 3 hex digits) both cover the bytes from the
//! opening `"` up to, not including, the `<CR>`. Written by hand because no maintained crate
//! implements DC-09 framing; the CRC and AES come from the `crc`, `aes` and `cbc` crates.

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockDecryptMut as _, BlockEncryptMut as _, KeyIvInit as _};
use time::OffsetDateTime;

/// CRC-16/ARC (poly 0x8005 reflected, init 0, no final XOR): the SIA DC-07 CRC of §1.3.
pub const CRC: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_ARC);

/// The largest body the length field can express (0xFFF).
pub const MAX_BODY: usize = 0xFFF;

/// The DC-09 IV: all zeros (§1.5; every implementation agrees).
const IV: [u8; 16] = [0; 16];

/// The 4 uppercase hex digits of the CRC of `body`.
pub fn crc_hex(body: &[u8]) -> String {
    format!("{:04X}", CRC.checksum(body))
}

/// `<LF><crc><0LLL><body><CR>`: the body is everything from the opening `"` to before the CR.
pub fn wrap(body: &str) -> Result<Vec<u8>, String> {
    if body.len() > MAX_BODY {
        return Err(format!(
            "a DC-09 frame holds at most {MAX_BODY} bytes (this one {})",
            body.len()
        ));
    }
    if body.bytes().any(|b| b == b'\n' || b == b'\r') {
        return Err("a DC-09 frame cannot hold LF or CR".into());
    }
    let mut out = Vec::with_capacity(body.len() + 10);
    out.push(b'\n');
    out.extend_from_slice(crc_hex(body.as_bytes()).as_bytes());
    out.extend_from_slice(format!("0{:03X}", body.len()).as_bytes());
    out.extend_from_slice(body.as_bytes());
    out.push(b'\r');
    Ok(out)
}

/// `_HH:MM:SS,MM-DD-YYYY` in UTC.
pub fn timestamp(at: OffsetDateTime) -> String {
    let t = at.to_offset(time::UtcOffset::UTC);
    format!(
        "_{:02}:{:02}:{:02},{:02}-{:02}-{:04}",
        t.hour(),
        t.minute(),
        t.second(),
        u8::from(t.month()),
        t.day(),
        t.year()
    )
}

/// Reads `HH:MM:SS,MM-DD-YYYY` (without the `_`) as UTC.
pub fn parse_timestamp(s: &str) -> Option<OffsetDateTime> {
    let b = s.as_bytes();
    if b.len() != 19 || b[2] != b':' || b[5] != b':' || b[8] != b',' || b[11] != b'-' {
        return None;
    }
    if b[14] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let month = time::Month::try_from(u8::try_from(num(9..11)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(
        i32::try_from(num(15..19)?).ok()?,
        month,
        u8::try_from(num(12..14)?).ok()?,
    )
    .ok()?;
    let tod = time::Time::from_hms(
        u8::try_from(num(0..2)?).ok()?,
        u8::try_from(num(3..5)?).ok()?,
        u8::try_from(num(6..8)?).ok()?,
    )
    .ok()?;
    Some(date.with_time(tod).assume_utc())
}

/// AES-CBC with the zero IV over whole blocks (the caller pads). The key is 16, 24 or 32 bytes.
pub fn encrypt(key: &[u8], clear: &[u8]) -> Result<Vec<u8>, String> {
    if !clear.len().is_multiple_of(16) {
        return Err("cleartext is not a whole number of AES blocks".into());
    }
    let mut buf = clear.to_vec();
    let n = buf.len();
    let bad = |_| "AES key must be 16, 24 or 32 bytes".to_owned();
    let done = match key.len() {
        16 => cbc::Encryptor::<aes::Aes128>::new_from_slices(key, &IV)
            .map_err(bad)?
            .encrypt_padded_mut::<NoPadding>(&mut buf, n)
            .map(|_| ()),
        24 => cbc::Encryptor::<aes::Aes192>::new_from_slices(key, &IV)
            .map_err(bad)?
            .encrypt_padded_mut::<NoPadding>(&mut buf, n)
            .map(|_| ()),
        32 => cbc::Encryptor::<aes::Aes256>::new_from_slices(key, &IV)
            .map_err(bad)?
            .encrypt_padded_mut::<NoPadding>(&mut buf, n)
            .map(|_| ()),
        _ => return Err("AES key must be 16, 24 or 32 bytes".into()),
    };
    done.map_err(|_| "AES encryption failed".to_owned())?;
    Ok(buf)
}

/// The inverse of [`encrypt`] (reading an encrypted answer, and the tests).
pub fn decrypt(key: &[u8], cipher: &[u8]) -> Result<Vec<u8>, String> {
    if cipher.is_empty() || !cipher.len().is_multiple_of(16) {
        return Err("ciphertext is not a whole number of AES blocks".into());
    }
    let mut buf = cipher.to_vec();
    let bad = |_| "AES key must be 16, 24 or 32 bytes".to_owned();
    let res = match key.len() {
        16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(key, &IV)
            .map_err(bad)?
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .map(|_| ()),
        24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(key, &IV)
            .map_err(bad)?
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .map(|_| ()),
        32 => cbc::Decryptor::<aes::Aes256>::new_from_slices(key, &IV)
            .map_err(bad)?
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .map(|_| ()),
        _ => return Err("AES key must be 16, 24 or 32 bytes".into()),
    };
    res.map_err(|_| "AES decryption failed".to_owned())?;
    Ok(buf)
}

/// The pad in front of an encrypted cleartext: so many random printable bytes that the whole
/// is a multiple of 16, between 16 and 31 of them (siadc09's reading of DC-09-2026 §5.4.4.3,
/// which every receiver we know accepts), never `[`, `]` or `|` (which receivers split on).
pub fn pad_for(rest_len: usize) -> Vec<u8> {
    use rand::Rng as _;
    let n = 16 + (16 - rest_len % 16) % 16;
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| {
            loop {
                let c: u8 = rng.gen_range(0x21..=0x7E);
                if !matches!(c, b'[' | b']' | b'|') {
                    break c;
                }
            }
        })
        .collect()
}

/// The account marker of a frame: `#acct` in messages and ACKs, `A0`-style in NAKs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Account {
    Hash(String),
    A(String),
}

/// One parsed frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Whether a CRC and length were present (a bare `"NAK"` has neither).
    pub framed: bool,
    pub encrypted: bool,
    /// `SIA-DCS`, `ADM-CID`, `NULL`, `ACK`, `NAK`, `DUH`, `RSP`… (without the `*`).
    pub token: String,
    pub seq: Option<String>,
    pub receiver: Option<String>,
    pub line: Option<String>,
    pub account: Option<Account>,
    /// From the first `[` to the end (plain data, x-data, timestamp; or `[` + hex ciphertext).
    pub rest: String,
}

impl Frame {
    /// The body (from `"` to before `<CR>`) as it is encoded: R before L.
    pub fn body(&self) -> String {
        let mut s = String::new();
        s.push('"');
        if self.encrypted {
            s.push('*');
        }
        s.push_str(&self.token);
        s.push('"');
        if let Some(seq) = &self.seq {
            s.push_str(seq);
        }
        if let Some(r) = &self.receiver {
            s.push('R');
            s.push_str(r);
        }
        if let Some(l) = &self.line {
            s.push('L');
            s.push_str(l);
        }
        match &self.account {
            Some(Account::Hash(a)) => {
                s.push('#');
                s.push_str(a);
            }
            Some(Account::A(a)) => {
                s.push('A');
                s.push_str(a);
            }
            None => {}
        }
        s.push_str(&self.rest);
        s
    }

    /// The whole frame on the wire.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        wrap(&self.body())
    }

    /// The message timestamp (`_HH:MM:SS,MM-DD-YYYY` at the end of a plain frame).
    pub fn timestamp(&self) -> Option<OffsetDateTime> {
        let at = self.rest.rfind('_')?;
        parse_timestamp(&self.rest[at + 1..])
    }
}

fn take_hex(s: &str, max: usize) -> (&str, &str) {
    let n = s
        .bytes()
        .take(max)
        .take_while(|b| b.is_ascii_hexdigit())
        .count();
    s.split_at(n)
}

/// Parses a frame: with or without the LF/CR, and also an unframed answer (`"NAK"`, which
/// pysiaalarm sends for an unknown account: STANDARDS.md §9.1). A framed one must have a
/// correct CRC and length. The receiver and line prefixes may come in either order (pysiaalarm's
/// NAK writes `L0R0`), and a literal `None` where a receiver belongs is skipped (pysiaalarm
/// echoes a missing receiver that way, §1.11).
pub fn parse(raw: &[u8]) -> Result<Frame, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "the frame is not ASCII".to_owned())?;
    let text = text.strip_prefix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if !text.is_ascii() {
        return Err("the frame is not ASCII".into());
    }
    let (framed, body) = if text.starts_with('"') {
        (false, text)
    } else {
        if text.len() < 9 {
            return Err("too short for a DC-09 frame".into());
        }
        let (crc, rest) = text.split_at(4);
        let (len, body) = rest.split_at(4);
        if !crc.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("the CRC field is not hexadecimal".into());
        }
        let len = usize::from_str_radix(len, 16)
            .map_err(|_| "the length field is not hexadecimal".to_owned())?;
        if len != body.len() {
            return Err(format!(
                "the length field says {len:#05X}, the body has {:#05X} bytes",
                body.len()
            ));
        }
        let computed = CRC.checksum(body.as_bytes());
        if u16::from_str_radix(crc, 16).ok() != Some(computed) {
            return Err(format!(
                "CRC mismatch: field {crc}, computed {computed:04X}"
            ));
        }
        (true, body)
    };
    let inner = body
        .strip_prefix('"')
        .ok_or_else(|| "no ID token".to_owned())?;
    let close = inner
        .find('"')
        .ok_or_else(|| "unterminated ID token".to_owned())?;
    let (token, mut s) = (&inner[..close], &inner[close + 1..]);
    let (encrypted, token) = match token.strip_prefix('*') {
        Some(t) => (true, t),
        None => (false, token),
    };
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_uppercase() || b == b'-') {
        return Err("bad ID token".into());
    }
    let mut frame = Frame {
        framed,
        encrypted,
        token: token.to_owned(),
        seq: None,
        receiver: None,
        line: None,
        account: None,
        rest: String::new(),
    };
    if s.is_empty() && !framed {
        return Ok(frame);
    }
    if s.len() < 4 || !s[..4].bytes().all(|b| b.is_ascii_digit()) {
        return Err("the sequence number is not 4 digits".into());
    }
    frame.seq = Some(s[..4].to_owned());
    s = &s[4..];
    // R and L in either order, each at most once (bounded: two fields and one `None`).
    let mut last_was_line = false;
    for _ in 0..3 {
        if let Some(after) = s.strip_prefix("None") {
            s = after;
        } else if let Some(after) = s.strip_prefix('R').filter(|_| frame.receiver.is_none()) {
            let (hex, more) = take_hex(after, 6);
            if hex.is_empty() {
                return Err("an empty receiver prefix".into());
            }
            frame.receiver = Some(hex.to_owned());
            last_was_line = false;
            s = more;
        } else if let Some(after) = s.strip_prefix('L').filter(|_| frame.line.is_none()) {
            let (hex, more) = take_hex(after, 6);
            if hex.is_empty() {
                return Err("an empty line prefix".into());
            }
            frame.line = Some(hex.to_owned());
            last_was_line = true;
            s = more;
        } else {
            break;
        }
    }
    // A NAK's account is `A0`, and `A` is also a hex digit: `L0A0` reads as line `0A0`. Without
    // a `#` account, the last prefix's final `A…` is the account.
    if frame.token == "NAK" && s.starts_with('[') {
        let last = if last_was_line {
            frame.line.as_mut()
        } else {
            frame.receiver.as_mut()
        };
        if let Some(p) = last
            && let Some(at) = p.rfind('A').filter(|&at| at > 0)
        {
            frame.account = Some(Account::A(p[at + 1..].to_owned()));
            p.truncate(at);
        }
    }
    if frame.account.is_none() {
        if let Some(after) = s.strip_prefix('#') {
            let (hex, more) = take_hex(after, 16);
            frame.account = Some(Account::Hash(hex.to_owned()));
            s = more;
        } else if let Some(after) = s.strip_prefix('A') {
            let (hex, more) = take_hex(after, 16);
            frame.account = Some(Account::A(hex.to_owned()));
            s = more;
        }
    }
    if !s.is_empty() && !s.starts_with('[') {
        return Err("unexpected text before the data block".into());
    }
    frame.rest = s.to_owned();
    Ok(frame)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Every frame vector of STANDARDS.md §1.4 and §1.11 (LF and CR added as on the wire): it
    /// parses, and re-encodes to the same bytes (the same CRC and length).
    const VECTORS: &[&str] = &[
        r#"F4D20029"SIA-DCS"0001RF3L77#1234[#1234|NRR|Atest]"#,
        r#"96ED0016"SIA-DCS"0001L0#1234[]"#,
        r#"E4410025"NAK"0000R0L0A0[]_16:20:01,09-24-2025"#,
        r#"8C860043"SIA-DCS"9876R579BDFL789ABC#123456A[#123456A|NFA129][M1234567890AB]"#,
        r#"76D80055"*NULL"0000R0L0#AAAB[B4BC8B40D0E6D959D6BEA78E88CC0B2155741A3C44FBB96D476A3E557CAD64D9"#,
        r#"DE260072"*NULL"0000L0#000[242ff5e1d26993d8ca4a622f7d779a93096ef7ed9b5499dc13de23e1405a5764b58737251286f0d81da5134d1eebc238"#,
        r#"80C10041"ADM-CID"0001L0#1234[#1234|1121 01 015][LBldg A Floor 2 Room 214]"#,
    ];

    #[test]
    fn crc_check_value() {
        assert_eq!(CRC.checksum(b"123456789"), 0xBB3D);
    }

    #[test]
    fn every_standard_vector_parses_and_reencodes_identically() {
        for v in VECTORS {
            let wire = format!("\n{v}\r");
            let frame = parse(wire.as_bytes()).unwrap_or_else(|e| panic!("{v}: {e}"));
            assert!(frame.framed, "{v}");
            let again = frame.encode().unwrap();
            assert_eq!(String::from_utf8(again).unwrap(), wire, "{v}");
            // The CRC and the length recomputed from the body alone.
            assert_eq!(&v[..4], crc_hex(&v.as_bytes()[8..]), "{v}");
            assert_eq!(
                usize::from_str_radix(&v[4..8], 16).unwrap(),
                v.len() - 8,
                "{v}"
            );
        }
        let f = parse(format!("\n{}\r", VECTORS[0]).as_bytes()).unwrap();
        assert_eq!(f.token, "SIA-DCS");
        assert_eq!(f.seq.as_deref(), Some("0001"));
        assert_eq!(f.receiver.as_deref(), Some("F3"));
        assert_eq!(f.line.as_deref(), Some("77"));
        assert_eq!(f.account, Some(Account::Hash("1234".into())));
        assert_eq!(f.rest, "[#1234|NRR|Atest]");
        let nak = parse(VECTORS[2].as_bytes()).unwrap();
        assert_eq!(nak.token, "NAK");
        assert_eq!(nak.account, Some(Account::A("0".into())));
        assert_eq!(
            nak.timestamp().unwrap(),
            time::macros::datetime!(2025-09-24 16:20:01 UTC)
        );
        let enc = parse(VECTORS[4].as_bytes()).unwrap();
        assert!(enc.encrypted && enc.token == "NULL");
    }

    #[test]
    fn a_changed_byte_or_length_is_refused() {
        let v = VECTORS[0];
        let bad_crc = v.replacen("F4D2", "F4D3", 1);
        assert!(parse(bad_crc.as_bytes()).unwrap_err().contains("CRC"));
        let bad_body = v.replace("Atest", "Atesu");
        assert!(parse(bad_body.as_bytes()).unwrap_err().contains("CRC"));
        let bad_len = v.replacen("0029", "0028", 1);
        assert!(parse(bad_len.as_bytes()).unwrap_err().contains("length"));
    }

    #[test]
    fn the_siadc09_encrypted_null_decrypts_to_pad_bracket_and_timestamp() {
        // siadc09 configures the key as 32 hex characters (the bytes they encode).
        let key = hex::decode("850cba22f7dd4f033405da83e4c5bae9").unwrap();
        let f = parse(VECTORS[5].as_bytes()).unwrap();
        let hexpart = f.rest.strip_prefix('[').unwrap();
        let clear = decrypt(&key, &hex::decode(hexpart).unwrap()).unwrap();
        assert_eq!(clear.len(), 48);
        let tail = std::str::from_utf8(&clear[27..]).unwrap();
        assert_eq!(tail, "]_03:07:43,09-22-2026");
        assert!(!clear[..27].iter().any(|b| matches!(b, b'[' | b']' | b'|')));
        // And our encryption of the same cleartext gives the same ciphertext.
        assert_eq!(hex::encode(encrypt(&key, &clear).unwrap()), hexpart);
    }

    #[test]
    fn tolerant_answers() {
        let bare = parse(b"\"NAK\"").unwrap();
        assert!(!bare.framed && bare.token == "NAK" && bare.seq.is_none());
        // pysiaalarm's standalone NAK: L before R.
        let body = "\"NAK\"0000L0R0A0[]_16:20:01,09-24-2025";
        let f = parse(&wrap(body).unwrap()).unwrap();
        assert_eq!(f.receiver.as_deref(), Some("0"));
        assert_eq!(f.line.as_deref(), Some("0"));
        assert!(f.timestamp().is_some());
        // pysiaalarm's ACK to a frame without R.
        let body = "\"ACK\"0001NoneL0#1234[]";
        let f = parse(&wrap(body).unwrap()).unwrap();
        assert_eq!(f.seq.as_deref(), Some("0001"));
        assert_eq!(f.account, Some(Account::Hash("1234".into())));
        for junk in [
            &b""[..],
            b"\n\r",
            b"\nZZZZ0003\"A\"\r",
            "\"NA\u{e9}K\"".as_bytes(),
        ] {
            assert!(parse(junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn every_key_size_round_trips_and_pads_are_safe() {
        for n in [16, 24, 32] {
            let key = vec![b'k'; n];
            for len in [0, 1, 15, 16, 17, 40] {
                let pad = pad_for(len);
                assert!((16..32).contains(&pad.len()));
                assert_eq!((pad.len() + len) % 16, 0);
                let mut clear = pad.clone();
                clear.extend(std::iter::repeat_n(b'x', len));
                let c = encrypt(&key, &clear).unwrap();
                assert_eq!(decrypt(&key, &c).unwrap(), clear);
            }
        }
        assert!(encrypt(&[0; 15], &[0; 16]).is_err());
    }

    #[test]
    fn timestamps() {
        let t = time::macros::datetime!(2026-12-01 09:05:07 UTC);
        assert_eq!(timestamp(t), "_09:05:07,12-01-2026");
        assert_eq!(parse_timestamp("09:05:07,12-01-2026"), Some(t));
        assert_eq!(parse_timestamp("09:05:07,13-01-2026"), None);
        assert_eq!(parse_timestamp("9:05:07,12-01-2026"), None);
    }
}
