//! The receiver's log output: human text (the default) or one JSON object per line for log
//! collectors (`--log-format json`).
//!
//! Both go to stderr (journald and container runtimes collect it) with the level from
//! `RUST_LOG` (default `info`). Nothing secret is ever logged (tokens, passwords, keys and
//! database passwords are redacted where they are formatted), so the JSON form needs no
//! filtering of its own: it carries exactly the fields of the text form — timestamp, level,
//! target, the message and its structured fields — with stable names (`timestamp`, `level`,
//! `target`, `fields.message`, `fields.<name>`, `span`, `spans`), tracing-subscriber's JSON
//! format.

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colour only on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber; call once, first thing.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}
