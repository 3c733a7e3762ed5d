//! The alarm thread: tray-menu and hotspot activations arrive on the UI thread, which must
//! never wait on anything — so they only put a request on a channel, and this thread calls
//! [`Engine::record`] (synchronous, durable on return, no network). The chord does not come
//! through here: its handler already runs on the hotkey back end's own thread and records
//! directly (see [`crate::hotkey`]).
//!
//! Nothing here shows anything: a press is logged (stderr), stored, and that is all.

use std::sync::mpsc;

use duress_agent_core::Engine;
use duress_agent_core::duress_core::{EventKind, Source};

/// What the alarm thread is asked to record.
#[derive(Debug)]
enum Request {
    Event(EventKind, Source),
    /// A duress-safe cancel, with the PIN typed when policy asks for one.
    Cancel(Source, Option<String>),
}

/// A cheap, cloneable handle that raises alarms without blocking the caller.
#[derive(Debug, Clone)]
pub struct Alarm {
    tx: mpsc::Sender<Request>,
    /// Kept to record in place if the alarm thread could not be started (never expected).
    engine: Engine,
    threaded: bool,
}

impl Alarm {
    /// Starts the alarm thread.
    pub fn spawn(engine: Engine) -> Alarm {
        let (tx, rx) = mpsc::channel::<Request>();
        let worker = engine.clone();
        let threaded = std::thread::Builder::new()
            .name("duress-alarm".into())
            .spawn(move || {
                for request in rx {
                    match request {
                        Request::Event(kind, source) => record(&worker, kind, source),
                        Request::Cancel(source, pin) => {
                            record_cancel(&worker, source, pin.as_deref());
                        }
                    }
                }
            })
            .map_err(|e| {
                tracing::error!(
                    "cannot start the alarm thread ({e}); presses are recorded in place"
                )
            })
            .is_ok();
        Alarm {
            tx,
            engine,
            threaded,
        }
    }

    /// Raises an alarm (or a self-test) from `source`; returns at once.
    pub fn raise(&self, kind: EventKind, source: Source) {
        if self.threaded && self.tx.send(Request::Event(kind, source)).is_ok() {
            return;
        }
        // The thread is gone (it cannot panic in practice): a late press beats no press.
        record(&self.engine, kind, source);
    }

    /// Sends a duress-safe cancel from `source` (with the PIN typed, if policy asks for one);
    /// returns at once.
    pub fn cancel(&self, source: Source, pin: Option<String>) {
        if self.threaded {
            match self.tx.send(Request::Cancel(source, pin)) {
                Ok(()) => return,
                Err(mpsc::SendError(Request::Cancel(source, pin))) => {
                    record_cancel(&self.engine, source, pin.as_deref());
                }
                Err(_) => {}
            }
            return;
        }
        record_cancel(&self.engine, source, pin.as_deref());
    }
}

/// Records one cancel. What the PIN said is never logged (a log can be shown to anyone).
pub fn record_cancel(engine: &Engine, source: Source, pin: Option<&str>) {
    match engine.record_cancel(source, pin) {
        // Debug only: a log is something an aggressor could be shown, and the press must
        // leave no visible trace on the station (issue 16).
        Ok(claims) => tracing::debug!(
            event = %claims.id,
            kind = "cancel",
            source = source.as_str(),
            "press recorded"
        ),
        Err(e) => tracing::error!(
            kind = "cancel",
            source = source.as_str(),
            "THE CANCEL COULD NOT BE MADE DURABLE: {e}"
        ),
    }
}

/// Records one event; a failure to make it durable is the one thing that is an error.
pub fn record(engine: &Engine, kind: EventKind, source: Source) {
    match engine.record(kind, source) {
        // Debug only: a log is something an aggressor could be shown, and the press must
        // leave no visible trace on the station (issue 16).
        Ok(claims) => tracing::debug!(
            event = %claims.id,
            kind = kind.as_str(),
            source = source.as_str(),
            "press recorded"
        ),
        Err(e) => tracing::error!(
            kind = kind.as_str(),
            source = source.as_str(),
            "THE PRESS COULD NOT BE MADE DURABLE: {e}"
        ),
    }
}
