//! # duress-agent — the Duress agent binary
//!
//! A thin front end over `duress-agent-core`: the CLI subcommands (`enroll`, `trigger`,
//! `status`, `run --headless`) live in [`cli`]; the Tauri tray app comes with issue 3. The
//! subcommands never initialise Tauri and need no display, but the crate links Tauri already so
//! that every build carries the real toolchain.
#![forbid(unsafe_code)]
// Tests may unwrap: a panic is exactly how a test should fail.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod cli;

use std::process::ExitCode;

use clap::Parser as _;

/// The Tauri version linked into this binary (shown by `--version`).
pub const TAURI_VERSION: &str = tauri::VERSION;

/// Entry point of the `duress-agent` binary.
pub fn run() -> ExitCode {
    let args = cli::Cli::parse();
    match args.command {
        None => {
            eprintln!("the tray app comes with issue 3; use `duress-agent run --headless`");
            ExitCode::from(2)
        }
        Some(command) => cli::execute(command),
    }
}
