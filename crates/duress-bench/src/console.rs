//! An officer at the security console: an account created in the data dir, a real sign-in
//! over HTTPS (session cookie), and the live stream `GET /events` read frame by frame. Each
//! frame that names an event id is passed on with the instant its bytes arrived.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use uuid::Uuid;

/// A frame of the live stream: the event it names and when it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub event_id: Uuid,
    pub at: Instant,
}

/// A signed-in console's open live stream.
#[derive(Debug)]
pub struct ConsoleStream {
    pub arrivals: mpsc::UnboundedReceiver<Arrival>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ConsoleStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ConsoleStream {
    /// Creates an officer in the receiver's store, signs in at `base` and opens the stream;
    /// returns once it answered.
    pub async fn open(
        store: &duress_receiver::store::StoreLocation,
        base: &str,
        ca: &Path,
    ) -> anyhow::Result<Self> {
        let client = duress_loadgen::client::https_client(ca, 2)?;
        let (user, password) = duress_loadgen::console_feed::create_officer(store).await?;
        let cookie = duress_loadgen::console_feed::sign_in(&client, base, &user, &password).await?;
        let mut resp = client
            .get(format!("{}/events", base.trim_end_matches('/')))
            .header("cookie", cookie)
            .header("accept", "text/event-stream")
            .timeout(Duration::from_secs(24 * 3600))
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().as_u16() == 200,
            "the console stream answered {}",
            resp.status()
        );
        let (tx, arrivals) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut buf = Vec::<u8>::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                let at = Instant::now();
                buf.extend_from_slice(&chunk);
                while let Some(end) = find(&buf, b"\n\n") {
                    let frame: Vec<u8> = buf.drain(..end + 2).collect();
                    if let Some(event_id) = event_id(&frame)
                        && tx.send(Arrival { event_id, at }).is_err()
                    {
                        return;
                    }
                }
            }
        });
        Ok(ConsoleStream { arrivals, task })
    }

    /// Waits (at most `timeout`) for the frame naming `id`; frames of other events are skipped.
    pub async fn wait_for(&mut self, id: Uuid, timeout: Duration) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.arrivals.recv()).await {
                Ok(Some(a)) if a.event_id == id => return Some(a.at),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `payload.event_id` of a `data:` line, if any.
fn event_id(frame: &[u8]) -> Option<Uuid> {
    let text = std::str::from_utf8(frame).ok()?;
    text.lines().find_map(|line| {
        let data = line.strip_prefix("data: ")?;
        let v: serde_json::Value = serde_json::from_str(data).ok()?;
        Uuid::parse_str(v["payload"]["event_id"].as_str()?).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The event id is read from the frame's JSON payload; keep-alives and retries name none.
    #[test]
    fn frames() {
        let id = Uuid::now_v7();
        let f = format!("id: 7\ndata: {{\"id\":7,\"payload\":{{\"event_id\":\"{id}\"}}}}\n\n");
        assert_eq!(event_id(f.as_bytes()), Some(id));
        assert_eq!(event_id(b": keep-alive\n\n"), None);
        assert_eq!(event_id(b"retry: 1000\n\n"), None);
        assert_eq!(find(b"ab\n\ncd", b"\n\n"), Some(2));
    }
}
