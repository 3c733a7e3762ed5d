//! `duress-agent diagnose`: one command for a help-desk call. Prints everything the status
//! window knows plus where the policy came from, a fresh keystore check, the chord's back end
//! and the state the running agent last reported, each receiver's answer to a signed heartbeat
//! with how its TLS identity is checked, the clock offset and the queue. Exit code 1 when the
//! station is not protected (the status line is not `Duress: on`, no receiver accepts a
//! heartbeat, or no agent has sent one recently), so scripts and RMM tools can act on it.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use duress_agent_core::duress_core::HotkeyState;
use duress_agent_core::engine::ReceiverProbe;
use duress_agent_core::policy::{self, PolicySource};
use duress_agent_core::status_line::{Protection, status_line};
use duress_agent_core::{Engine, StatusSnapshot};
use serde::Serialize;

use crate::hotkey::Session;

/// The whole diagnosis (`--json` prints it as is).
#[derive(Debug, Serialize)]
pub struct Diagnosis {
    /// `true` only when every check below passed.
    pub protected: bool,
    /// Why not, one line per problem.
    pub problems: Vec<String>,
    /// The tray's status line, word for word.
    pub status_line: String,
    pub policy_source: String,
    pub session: String,
    pub chord_backend: String,
    pub keystore: String,
    pub receivers: Vec<ReceiverProbe>,
    pub status: StatusSnapshot,
}

/// Which back end registers the chord in this kind of session.
fn chord_backend(session: Session) -> &'static str {
    if cfg!(target_os = "windows") {
        return "RegisterHotKey (global-hotkey)";
    }
    if cfg!(target_os = "macos") {
        return "Carbon hot keys (global-hotkey)";
    }
    match session {
        Session::X11 => "X11 key grab (global-hotkey)",
        Session::Wayland => "xdg-desktop-portal GlobalShortcuts",
        Session::None => "none (no graphical session in this shell)",
    }
}

fn describe_source(source: &PolicySource) -> String {
    match source {
        PolicySource::Flag(p) => format!("--policy {}", p.display()),
        PolicySource::Env(p) => format!("{} = {}", policy::ENV_POLICY, p.display()),
        PolicySource::OsDefault(p) => format!("{} (OS default)", p.display()),
        PolicySource::OsSources { primary, layers } if layers.is_empty() => {
            format!("none found (machine policy would be {})", primary.display())
        }
        PolicySource::OsSources { layers, .. } => layers.join(" < "),
    }
}

/// Runs the diagnosis and prints it.
pub fn run(policy_flag: Option<&Path>, json: bool) -> Result<ExitCode> {
    let (_, source) = policy::load_resolved(policy_flag)?;
    let engine = crate::engine_setup::open_engine(policy_flag)?;
    let d = diagnose(&engine, &source)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        print_text(&d);
    }
    Ok(if d.protected {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Gathers the diagnosis (blocking: keystore over D-Bus, one heartbeat per receiver).
pub fn diagnose(engine: &Engine, source: &PolicySource) -> Result<Diagnosis> {
    let mut problems = Vec::new();
    engine.check_keystore();
    let status = engine.status()?;
    let keystore = match &status.keystore_problem {
        Some(p) => p.clone(),
        None if status.enrolled => "ok: the device key was read from the OS keystore".to_owned(),
        None => "ok: the OS keystore answers (no device key yet: not enrolled)".to_owned(),
    };
    let receivers = if status.enrolled {
        match crate::engine_setup::runtime()?
            .block_on(engine.probe_receivers(status.hotkey.clone()))
        {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("receivers not asked: {e}"));
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    let now = engine.now();
    let line = status_line(
        &status,
        engine.policy(),
        now,
        crate::local_time::offset_now(),
    );
    if line.protection != Protection::On {
        problems.push(line.text.clone());
    }
    if status.enrolled && !receivers.iter().any(|r| r.reachable) {
        problems.push("no receiver accepted a heartbeat".to_owned());
    }
    // The running agent heartbeats every interval: none for two intervals means it is not
    // running (or cannot reach anyone), and then the chord and the queue are not served.
    let interval = time::Duration::seconds(engine.policy().heartbeat.interval_s as i64);
    match status.last_heartbeat_at {
        _ if !status.enrolled => {}
        None => problems.push("no heartbeat was ever acknowledged: is the agent running?".into()),
        Some(t) if now - t > interval * 2 => problems.push(format!(
            "the last acknowledged heartbeat is {} s old: is the agent running?",
            (now - t).whole_seconds()
        )),
        Some(_) => {}
    }
    if let HotkeyState::NotApplicable = status.hotkey
        && !engine.policy().hotkey.chords.is_empty()
        && status.enrolled
    {
        problems.push("the running agent has not reported its chord".into());
    }
    let session = Session::from_env();
    Ok(Diagnosis {
        protected: problems.is_empty(),
        problems,
        status_line: line.text,
        policy_source: describe_source(source),
        session: format!("{session:?}"),
        chord_backend: chord_backend(session).to_owned(),
        keystore,
        receivers,
        status,
    })
}

fn print_text(d: &Diagnosis) {
    let s = &d.status;
    let t = |v: Option<time::OffsetDateTime>| {
        v.and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "never".into())
    };
    println!(
        "verdict: {}",
        if d.protected {
            "PROTECTED"
        } else {
            "NOT PROTECTED"
        }
    );
    for p in &d.problems {
        println!("  problem: {p}");
    }
    println!("status line: {}", d.status_line);
    println!("agent version: {}", duress_agent_core::AGENT_VERSION);
    println!("policy: {}", d.policy_source);
    println!("state dir: {} (install {})", s.state_dir, s.install_id);
    match &s.device_id {
        Some(id) => println!(
            "device: {id} ({})",
            s.device_status.map_or("status unknown", |d| d.as_str())
        ),
        None => println!("device: not enrolled"),
    }
    println!("keystore: {}", d.keystore);
    println!("location: {}", s.location_label);
    println!(
        "session: {} — chord back end: {}",
        d.session, d.chord_backend
    );
    let chord = match &s.hotkey {
        HotkeyState::Registered { chords } => format!("registered: {}", chords.join(", ")),
        HotkeyState::Unavailable { reason } => format!("unavailable: {reason}"),
        HotkeyState::NotApplicable => "not reported by a running agent".into(),
    };
    println!("chord (as the running agent last reported): {chord}");
    for r in &d.receivers {
        println!("receiver {}:", r.url);
        println!("  answer: {}", r.answer);
        println!("  TLS identity: {}", r.tls_identity);
        if let Some(ms) = r.clock_offset_ms {
            println!("  clock offset (receiver − this station): {ms} ms");
        }
    }
    if d.receivers.is_empty() {
        println!(
            "receivers: {}",
            if s.receivers.is_empty() {
                "none configured".to_owned()
            } else {
                s.receivers.join(", ") + " (not asked)"
            }
        );
    }
    println!("learned clock offset: {} ms", s.clock_offset_ms);
    println!("queued events: {}", s.queued);
    println!("last heartbeat acknowledged: {}", t(s.last_heartbeat_at));
    match &s.last_self_test {
        Some(st) => println!("last self-test: {} ({})", t(Some(st.at)), st.id),
        None => println!("last self-test: never"),
    }
    if let Some(e) = &s.last_error {
        println!("last error: {e}");
    }
}
