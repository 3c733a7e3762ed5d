//! Officers' view: signs in to the security console and reads its live stream (`GET /events`,
//! Server-Sent Events), noting when each event id first appears, so the load run can report
//! console delivery latency (press → frame on an officer's screen connection).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context as _;
use uuid::Uuid;

/// Arrival times of event ids on the stream.
pub type Arrivals = Arc<Mutex<HashMap<Uuid, Instant>>>;

/// Creates an officer account for this run directly in the store (a data dir's SQLite, or any
/// [`duress_receiver::store::StoreLocation`], like `duress-receiver user add`) and returns its
/// username and password.
pub async fn create_officer(
    store: impl Into<duress_receiver::store::StoreLocation>,
) -> anyhow::Result<(String, String)> {
    use duress_receiver::console::accounts;
    let username = format!("loadgen-{}", &Uuid::now_v7().simple().to_string()[20..]);
    let password = accounts::generate_password();
    duress_receiver::admin::add_user(
        store,
        &username,
        duress_receiver::store::Role::Officer,
        &password,
    )
    .await?;
    Ok((username, password))
}

/// Signs in and returns the session cookie (`name=value`).
pub async fn sign_in(
    client: &reqwest::Client,
    base: &str,
    username: &str,
    password: &str,
) -> anyhow::Result<String> {
    let form = format!(
        "username={}&password={}",
        urlencode(username),
        urlencode(password)
    );
    let resp = client
        .post(format!("{}/login", base.trim_end_matches('/')))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await?;
    let status = resp.status();
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("__Host-duress_session="))
        .and_then(|c| c.split(';').next())
        .map(str::to_owned);
    cookie.with_context(|| format!("sign-in gave no session cookie (HTTP {status})"))
}

/// Opens the stream and records, in the background, the first arrival of every event id.
/// Returns once the stream answered 200.
pub async fn subscribe(
    client: &reqwest::Client,
    base: &str,
    cookie: &str,
) -> anyhow::Result<(Arrivals, tokio::task::JoinHandle<()>)> {
    let mut resp = client
        .get(format!("{}/events", base.trim_end_matches('/')))
        .header("cookie", cookie)
        .header("accept", "text/event-stream")
        .timeout(std::time::Duration::from_secs(24 * 3600))
        .send()
        .await?;
    anyhow::ensure!(
        resp.status().as_u16() == 200,
        "console stream answered {}",
        resp.status()
    );
    let arrivals: Arrivals = Arc::default();
    let seen = arrivals.clone();
    let task = tokio::spawn(async move {
        let mut buf = String::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            let now = Instant::now();
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                for line in frame.lines() {
                    let Some(data) = line.strip_prefix("data: ") else {
                        continue;
                    };
                    let id = serde_json::from_str::<serde_json::Value>(data)
                        .ok()
                        .and_then(|v| v["payload"]["event_id"].as_str().map(str::to_owned))
                        .and_then(|s| Uuid::parse_str(&s).ok());
                    if let Some(id) = id {
                        seen.lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .entry(id)
                            .or_insert(now);
                    }
                }
            }
        }
    });
    Ok((arrivals, task))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
