//! `duress-receiver`: parses the command line and launches it (the commands are in
//! [`duress_receiver::cli`]).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser as _;
use duress_receiver::cli::{self, Cli};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    duress_receiver::logging::init(cli.log_format);
    match cli::run(cli, duress_shutdown::shutdown_signal).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("duress-receiver: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
