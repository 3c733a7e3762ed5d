//! The e-mail channel (SMTP).

use super::channels::{Message, SendError, Sent};
use crate::config::EmailChannel;

/// Sends the message to every recipient.
pub async fn send(_channel: &EmailChannel, _msg: &Message) -> Result<Sent, SendError> {
    Err(SendError {
        http_status: None,
        message: "e-mail delivery is not built yet".into(),
    })
}
