//! Opening the agent engine from the resolved policy, and the small runtime the one-shot
//! subcommands use: shared by `cli` and `diagnose` (a leaf module, so neither depends on the
//! other for it).

use std::path::Path;

use anyhow::{Context as _, Result};
use duress_agent_core::policy::{self, PolicySource};
use duress_agent_core::{Engine, Policy};

pub(crate) fn open_engine(policy_flag: Option<&Path>) -> Result<Engine> {
    let loaded = policy::load_resolved_report(policy_flag)?;
    if let PolicySource::OsDefault(p) = &loaded.source
        && !p.exists()
    {
        tracing::warn!(
            "no policy at {}; using receivers stored at enrollment",
            p.display()
        );
    }
    let report = loaded.report();
    let engine = open_with(loaded.policy)?;
    engine.set_policy_report(report);
    Ok(engine)
}

pub(crate) fn open_with(policy: Policy) -> Result<Engine> {
    let state_dir = duress_agent_core::state::resolve_state_dir()?;
    Engine::open(policy, state_dir.clone())
        .with_context(|| format!("cannot open the agent state in {}", state_dir.display()))
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
