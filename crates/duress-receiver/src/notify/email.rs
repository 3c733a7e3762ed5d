//! The e-mail channel: SMTP with lettre (STARTTLS, implicit TLS, or plain to a loopback relay),
//! one message with a plain-text and an HTML part to every `to` address. Its `Message-ID` is
//! the outbox row's id, so a repeat after a restart is recognisably the same message.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor};

use super::channels::{Message, SendError, Sent};
use crate::config::{EmailChannel, SmtpTls};

/// One SMTP conversation may take this long.
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

fn err(message: impl Into<String>) -> SendError {
    SendError {
        http_status: None,
        message: message.into(),
    }
}

/// HTML text escaping for the few values the HTML part shows.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The subject, plain text and HTML of a message.
pub fn render(msg: &Message) -> (String, String, String) {
    let subject = super::channels::clip(&format!("{} - {}", msg.label(), msg.headline()), 200);
    let mut rows = vec![
        ("Location", msg.label()),
        ("Address", msg.facts.location.civic_address()),
        ("Workstation", msg.facts.host.hostname.clone()),
        ("User", msg.facts.host.user.clone()),
        ("Time", msg.time()),
    ];
    if let Some(n) = msg.press_count {
        rows.push(("Presses", n.to_string()));
    }
    rows.retain(|(_, v)| !v.trim().is_empty());
    let mut text = format!("{}\n{}\n\n", msg.label(), msg.headline());
    for (k, v) in &rows {
        text.push_str(&format!("{k}: {v}\n"));
    }
    let mut html = format!(
        "<!doctype html><html><body><h1>{}</h1><p><strong>{}</strong></p><table>",
        esc(&msg.label()),
        esc(msg.headline())
    );
    for (k, v) in &rows {
        html.push_str(&format!(
            "<tr><th align=\"left\">{k}</th><td>{}</td></tr>",
            esc(v)
        ));
    }
    html.push_str("</table>");
    if let Some(url) = &msg.incident_url {
        text.push_str(&format!("\nOpen the incident: {url}\n"));
        html.push_str(&format!(
            "<p><a href=\"{}\">Open the incident</a></p>",
            esc(url)
        ));
    }
    html.push_str("</body></html>");
    (subject, text, html)
}

/// Sends the message to every recipient in one SMTP transaction.
pub async fn send(channel: &EmailChannel, msg: &Message) -> Result<Sent, SendError> {
    let from: Mailbox = channel
        .from
        .parse()
        .map_err(|_| err("the from address is not valid"))?;
    let (subject, text, html) = render(msg);
    let mut builder = lettre::Message::builder()
        .from(from)
        .subject(subject)
        .message_id(Some(format!("<{}@duress>", msg.id)));
    for to in &channel.to {
        let to: Mailbox = to
            .parse()
            .map_err(|_| err(format!("the to address {to:?} is not valid")))?;
        builder = builder.to(to);
    }
    let mail = builder
        .multipart(MultiPart::alternative_plain_html(text, html))
        .map_err(|e| err(format!("building the message: {e}")))?;

    let params = || -> Result<TlsParameters, SendError> {
        let mut b = TlsParameters::builder(channel.smtp_host.clone());
        if let Some(ca) = &channel.ca_cert {
            let pem = std::fs::read(ca).map_err(|e| err(format!("reading ca_cert: {e}")))?;
            b = b.add_root_certificate(
                Certificate::from_pem(&pem).map_err(|e| err(format!("ca_cert: {e}")))?,
            );
        }
        b.build_rustls().map_err(|e| err(format!("TLS: {e}")))
    };
    // builder_dangerous: the transport with TLS chosen here, not lettre's default (which
    // would be STARTTLS-required even to a loopback relay).
    let mut transport =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(channel.smtp_host.as_str())
            .port(channel.smtp_port)
            .timeout(Some(SMTP_TIMEOUT));
    transport = match channel.tls {
        SmtpTls::None => transport.tls(Tls::None),
        SmtpTls::Starttls => transport.tls(Tls::Required(params()?)),
        SmtpTls::Tls => transport.tls(Tls::Wrapper(params()?)),
    };
    if let (Some(user), Some(password)) = (&channel.username, &channel.password) {
        transport =
            transport.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
    }
    match transport.build().send(mail).await {
        Ok(response) => Ok(Sent::Delivered(
            response.code().to_string().parse::<u16>().ok(),
        )),
        // lettre's errors carry the server's reply and the kind, never our credentials.
        Err(e) => Err(SendError {
            http_status: e.status().and_then(|c| c.to_string().parse::<u16>().ok()),
            message: format!("SMTP: {e}"),
        }),
    }
}
