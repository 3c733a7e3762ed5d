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
    let activated = portal.receive_activated().await.map_err(no_portal)?;
    let deactivated = portal.receive_deactivated().await.map_err(no_portal)?;
    let changed = portal
        .receive_shortcuts_changed()
        .await
        .map_err(no_portal)?;
    publish(&state, bound_state(&triggers_of(bound.shortcuts())));

    // The portal sends these signals to the session's owner; our shortcut ids say they are
    // ours (ashpd does not expose the session's path).
    let _session = session;
    let mut events = Box::pin(futures::stream::select(
        futures::stream::select(
            activated.map(|a| PortalEvent::Down(a.shortcut_id().to_owned())),
            deactivated.map(|d| PortalEvent::Up(d.shortcut_id().to_owned())),
        ),
        changed.map(|c| PortalEvent::Changed(triggers_of(c.shortcuts()))),
    ));
    while let Some(event) = events.next().await {
        let down = match event {
            PortalEvent::Changed(triggers) => {
                let triggers: Vec<_> = triggers.into_iter().filter(|(id, _)| ours(id)).collect();
                if !triggers.is_empty() {
                    // The user changed the key in the desktop's settings (or removed it).
                    publish(&state, bound_state(&triggers));
                }
                continue;
            }
            PortalEvent::Down(id) if ours(&id) => true,
            PortalEvent::Up(id) if ours(&id) => false,
            _ => continue,
        };
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

/// What the portal says: a shortcut went down or up (its id), or the shortcuts changed.
enum PortalEvent {
    Down(String),
    Up(String),
    Changed(Vec<(String, String)>),
}

/// Our shortcuts' ids: `duress-0`, `duress-1`, … (one per policy chord).
fn ours(id: &str) -> bool {
    id.starts_with("duress-")
}

/// The reason shown when the desktop accepted the shortcut but assigned it no key.
pub const NO_KEY_ASSIGNED: &str = "no key assigned — bind it in Settings";

/// `(id, trigger description)` of each bound shortcut.
fn triggers_of(shortcuts: &[ashpd::desktop::global_shortcuts::Shortcut]) -> Vec<(String, String)> {
    shortcuts
        .iter()
        .map(|s| (s.id().to_owned(), s.trigger_description().trim().to_owned()))
        .collect()
}

/// The chord's state from what the portal bound: a shortcut with an empty trigger is bound to
/// no key at all — a chord that can never fire — so it is unavailable, never "registered".
pub(crate) fn bound_state(triggers: &[(String, String)]) -> HotkeyState {
    let keys: Vec<String> = triggers
        .iter()
        .map(|(_, t)| t.trim())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    for (id, _) in triggers.iter().filter(|(_, t)| t.trim().is_empty()) {
        tracing::warn!("the desktop bound the shortcut {id} to no key");
    }
    if keys.is_empty() {
        HotkeyState::Unavailable {
            reason: NO_KEY_ASSIGNED.to_owned(),
        }
    } else {
        HotkeyState::Registered { chords: keys }
    }
}

fn publish(state: &watch::Sender<HotkeyState>, new: HotkeyState) {
    match &new {
        HotkeyState::Registered { chords } => {
            tracing::info!(?chords, "hotkey bound through the GlobalShortcuts portal");
        }
        HotkeyState::Unavailable { reason } => tracing::warn!("hotkey unavailable: {reason}"),
        HotkeyState::NotApplicable => {}
    }
    state.send_replace(new);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    /// An empty or missing trigger is "no key assigned", never a registered chord; the keys
    /// the desktop did assign are what the status shows.
    #[test]
    fn an_empty_trigger_is_unavailable() {
        assert_eq!(
            bound_state(&t(&[("duress-0", "")])),
            HotkeyState::Unavailable {
                reason: NO_KEY_ASSIGNED.into()
            }
        );
        assert_eq!(
            bound_state(&[]),
            HotkeyState::Unavailable {
                reason: NO_KEY_ASSIGNED.into()
            }
        );
        assert_eq!(
            bound_state(&t(&[("duress-0", "  "), ("duress-1", "Ctrl+Alt+Shift+D")])),
            HotkeyState::Registered {
                chords: vec!["Ctrl+Alt+Shift+D".into()]
            }
        );
    }
}
