//! Wayland: the xdg-desktop-portal GlobalShortcuts portal (KDE Plasma ≥ 5.27, GNOME ≥ 48),
//! through ashpd. The desktop may ask the user once to confirm the shortcut; from then on
//! `Activated`/`Deactivated` signals arrive on the engine thread's runtime and are handed to the
//! blocking pool (recording fsyncs). Without the portal the state says the chord is
//! unavailable and Help explains how to bind `duress-agent trigger` as a desktop shortcut —
//! never a silently dead chord.

use std::sync::Arc;

use ashpd::desktop::CreateSessionOptions;
use ashpd::desktop::global_shortcuts::{BindShortcutsOptions, GlobalShortcuts, NewShortcut};
use duress_agent_core::duress_core::HotkeyState;
use futures::StreamExt as _;
use tokio::sync::watch;

use super::{ChordHandler, portal_trigger};

/// Starts binding on `rt`; the outcome arrives on `state`.
pub(super) fn start(
    chords: &[String],
    handler: Arc<ChordHandler>,
    state: watch::Sender<HotkeyState>,
    rt: &tokio::runtime::Handle,
) {
    state.send_replace(HotkeyState::Unavailable {
        reason: "Wayland: asking the desktop's GlobalShortcuts portal".into(),
    });
    let chords = chords.to_vec();
    rt.spawn(async move {
        // ashpd asserts on odd portal answers: run in its own task so a panic there becomes an
        // error here, never a dead agent.
        let task_state = state.clone();
        let outcome = tokio::spawn(bind_and_listen(chords, handler, task_state)).await;
        let reason = match outcome {
            Ok(Ok(())) => "Wayland: the GlobalShortcuts portal session ended".to_owned(),
            Ok(Err(e)) => e,
            Err(e) => format!("the GlobalShortcuts portal failed: {e}"),
        };
        tracing::warn!("hotkey unavailable: {reason}");
        state.send_replace(HotkeyState::Unavailable {
            reason: format!(
                "{reason}; bind `duress-agent trigger` as a desktop shortcut (see Help)"
            ),
        });
    });
}

async fn bind_and_listen(
    chords: Vec<String>,
    handler: Arc<ChordHandler>,
    state: watch::Sender<HotkeyState>,
) -> Result<(), String> {
    let no_portal =
        |e: ashpd::Error| format!("Wayland session without the GlobalShortcuts portal ({e})");
    let portal = GlobalShortcuts::new().await.map_err(no_portal)?;
    let session = portal
        .create_session(CreateSessionOptions::default())
        .await
        .map_err(no_portal)?;
    let shortcuts: Vec<NewShortcut> = chords
        .iter()
        .enumerate()
        .map(|(i, chord)| {
            NewShortcut::new(format!("duress-{i}"), "Duress: request assistance silently")
                .preferred_trigger(portal_trigger(chord).as_deref())
        })
        .collect();
    let request = portal
        .bind_shortcuts(&session, &shortcuts, None, BindShortcutsOptions::default())
        .await
        .map_err(no_portal)?;
    let bound = request
        .response()
        .map_err(|e| format!("the desktop did not bind the chord ({e})"))?;
    let triggers: Vec<String> = bound
        .shortcuts()
        .iter()
        .map(|s| {
            if s.trigger_description().is_empty() {
                s.id().to_owned()
            } else {
                s.trigger_description().to_owned()
            }
        })
        .collect();
    if triggers.is_empty() {
        return Err("the desktop bound no shortcut".into());
    }
    let activated = portal.receive_activated().await.map_err(no_portal)?;
    let deactivated = portal.receive_deactivated().await.map_err(no_portal)?;
    state.send_replace(HotkeyState::Registered { chords: triggers });
    tracing::info!("hotkey bound through the GlobalShortcuts portal");

    let mut events = Box::pin(futures::stream::select(
        activated.map(|_| true),
        deactivated.map(|_| false),
    ));
    while let Some(down) = events.next().await {
        let h = handler.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if down {
                h.pressed();
            } else {
                h.released();
            }
        })
        .await;
    }
    Ok(())
}
