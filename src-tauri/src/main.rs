//! `duress-agent`: see `duress_agent` (src/lib.rs).
fn main() -> std::process::ExitCode {
    duress_agent::run()
}
