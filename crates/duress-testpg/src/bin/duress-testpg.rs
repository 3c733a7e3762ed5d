//! `duress-testpg`: starts a throw-away PostgreSQL 15 cluster, prints its URL on stdout (one
//! line), and keeps it running until stdin closes, SIGTERM or Ctrl-C; then stops it and removes
//! its files. For scripts (the console's browser suite on PostgreSQL):
//!
//! ```sh
//! coproc PG { duress-testpg; }; read -r DURESS_DATABASE_URL <&"${PG[0]}"
//! ```

use std::io::Write as _;

use tokio::io::AsyncReadExt as _;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cluster = match duress_testpg::TestPg::start() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("duress-testpg: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{}", cluster.url())
        .and_then(|()| out.flush())
        .is_err()
    {
        return std::process::ExitCode::FAILURE;
    }
    drop(out);
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("duress-testpg: listening for SIGTERM: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let stdin_closed = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 256];
        // Anything read is ignored; end of input (or an error) means the caller is gone.
        while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    tokio::select! {
        () = stdin_closed => {}
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    drop(cluster);
    std::process::ExitCode::SUCCESS
}
