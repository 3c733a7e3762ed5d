//! The shutdown signal every long-running Duress binary waits for (`duress-receiver serve`,
//! `duress-agent run --headless`, the benchmark's receiver): SIGINT (Ctrl-C) or, on Unix,
//! SIGTERM — what systemd, launchd and a test harness send.
//!
//! The Unix handlers are registered when [`shutdown_signal`] is *called*, not when its future
//! is first polled: a binary calls it before it announces it is ready (the receiver prints its
//! URL, the agent its status), so a supervisor that signals as soon as it reads that line gets a
//! graceful stop instead of the default action (death by the signal, with no final fsync or
//! goodbye). A handler that cannot be registered is logged and that signal left at its default;
//! start-up is never refused for it.

#![forbid(unsafe_code)]

use std::future::Future;

/// Resolves on SIGINT or, on Unix, SIGTERM. Call it before announcing readiness.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        let register = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("cannot listen for {name}: {e}; it keeps its default action");
                None
            }
        };
        let term = register(SignalKind::terminate(), "SIGTERM");
        let int = register(SignalKind::interrupt(), "SIGINT");
        async move {
            let wait = |s: Option<Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(term) => tracing::info!("SIGTERM: shutting down"),
                () = wait(int) => tracing::info!("SIGINT: shutting down"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        // Windows: Ctrl-C / Ctrl-Break; a service stop reaches the agent through its own
        // control handler, not through here.
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C: shutting down");
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// SIGTERM sent right after the call (before any poll) ends the wait instead of the process.
    #[test]
    fn sigterm_right_after_the_call_is_caught() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        rt.block_on(async {
            let signal = shutdown_signal();
            let status = std::process::Command::new("kill")
                .args(["-TERM", &std::process::id().to_string()])
                .status()
                .unwrap_or_else(|e| panic!("kill: {e}"));
            assert!(status.success());
            tokio::time::timeout(std::time::Duration::from_secs(10), signal)
                .await
                .unwrap_or_else(|_| panic!("SIGTERM did not end the wait"));
        });
    }
}
