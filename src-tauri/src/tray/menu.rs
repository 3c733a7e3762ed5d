//! The Tauri menu built from a [`MenuModel`], generic over the runtime so it is tested with
//! Tauri's mock runtime (no display). [`TrayMenu::apply`] pushes only the texts that changed:
//! a refresh that finds nothing new touches no item.

use std::sync::{Mutex, PoisonError};

use tauri::menu::{Menu, MenuItem, PredefinedMenuItem};
use tauri::{Manager, Runtime};

use super::model::{MenuModel, ids, labels};

/// The menu and handles on the items whose text can change.
pub struct TrayMenu<R: Runtime> {
    pub menu: Menu<R>,
    status: MenuItem<R>,
    location: MenuItem<R>,
    chord: MenuItem<R>,
    last_contact: MenuItem<R>,
    last_self_test: MenuItem<R>,
    about: MenuItem<R>,
    /// What the items show now.
    shown: Mutex<MenuModel>,
}

impl<R: Runtime> std::fmt::Debug for TrayMenu<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrayMenu")
            .field("shown", &self.shown)
            .finish_non_exhaustive()
    }
}

impl<R: Runtime> TrayMenu<R> {
    /// Builds the menu for `model`. Informational lines are disabled items (Linux trays have no
    /// tooltips or clicks: everything lives in the menu).
    pub fn build<M: Manager<R>>(app: &M, model: &MenuModel) -> tauri::Result<Self> {
        let info = |id: &str, text: &str| MenuItem::with_id(app, id, text, false, None::<&str>);
        let action = |id: &str, text: &str| MenuItem::with_id(app, id, text, true, None::<&str>);
        let status = info(ids::STATUS, &model.status)?;
        let location = info(ids::LOCATION, &model.location)?;
        let chord = info(ids::CHORD, &model.chord)?;
        let last_contact = info(ids::LAST_CONTACT, &model.last_contact)?;
        let last_self_test = info(ids::LAST_SELF_TEST, &model.last_self_test)?;
        let hidden = action(ids::HIDDEN_BUTTON, &model.hidden_button)?;
        let cancel = action(ids::CANCEL, &model.cancel)?;
        let self_test = action(ids::SELF_TEST, labels::SELF_TEST)?;
        let help = action(ids::HELP, labels::HELP)?;
        let about = action(ids::ABOUT, &model.about)?;

        let menu = Menu::new(app)?;
        menu.append(&status)?;
        menu.append(&location)?;
        if model.change_location {
            menu.append(&action(ids::CHANGE_LOCATION, labels::CHANGE_LOCATION)?)?;
        }
        menu.append(&chord)?;
        menu.append(&last_contact)?;
        menu.append(&last_self_test)?;
        menu.append(&PredefinedMenuItem::separator(app)?)?;
        menu.append(&hidden)?;
        menu.append(&cancel)?;
        menu.append(&self_test)?;
        menu.append(&PredefinedMenuItem::separator(app)?)?;
        menu.append(&help)?;
        menu.append(&about)?;
        if model.quit {
            menu.append(&action(ids::QUIT, labels::QUIT)?)?;
        }
        Ok(TrayMenu {
            menu,
            status,
            location,
            chord,
            last_contact,
            last_self_test,
            about,
            shown: Mutex::new(model.clone()),
        })
    }

    /// Shows `model`, changing only the texts that differ. Returns how many items changed.
    pub fn apply(&self, model: &MenuModel) -> tauri::Result<usize> {
        let mut shown = self.shown.lock().unwrap_or_else(PoisonError::into_inner);
        if *shown == *model {
            return Ok(0);
        }
        let mut changed = 0;
        let pairs = [
            (&self.status, &shown.status, &model.status),
            (&self.location, &shown.location, &model.location),
            (&self.chord, &shown.chord, &model.chord),
            (&self.last_contact, &shown.last_contact, &model.last_contact),
            (
                &self.last_self_test,
                &shown.last_self_test,
                &model.last_self_test,
            ),
            (&self.about, &shown.about, &model.about),
        ];
        for (item, old, new) in pairs {
            if old != new {
                item.set_text(new)?;
                changed += 1;
            }
        }
        *shown = model.clone();
        Ok(changed)
    }

    /// `(id, text, enabled)` of every item, in menu order (separators omitted).
    pub fn items(&self) -> tauri::Result<Vec<(String, String, bool)>> {
        let mut out = Vec::new();
        for kind in self.menu.items()? {
            if let Some(item) = kind.as_menuitem() {
                out.push((
                    item.id().as_ref().to_owned(),
                    item.text()?,
                    item.is_enabled()?,
                ));
            }
        }
        Ok(out)
    }
}

/// Menu state from engine status, with Tauri's mock runtime: no display, no tray host.
#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use duress_agent_core::duress_core::{DeviceStatus, EventKind, HotkeyState, Source};
    use duress_agent_core::policy::Policy;
    use duress_agent_core::{Engine, StatusSnapshot};
    use tauri::Manager as _;
    use time::macros::{datetime, offset};
    use tokio::sync::watch;

    use super::*;
    use crate::alarm::Alarm;
    use crate::app_state::AppState;
    use crate::hotkey::Session;
    use crate::tray::model::tests::{NOW, snapshot};

    fn model(s: &StatusSnapshot, p: &Policy) -> MenuModel {
        MenuModel::new(s, p, NOW, offset!(UTC))
    }

    fn texts(menu: &TrayMenu<tauri::test::MockRuntime>) -> Vec<(String, String, bool)> {
        menu.items().unwrap()
    }

    fn find<'a>(
        items: &'a [(String, String, bool)],
        id: &str,
    ) -> Option<&'a (String, String, bool)> {
        items.iter().find(|(i, _, _)| i == id)
    }

    /// A working station: every line, in order; information lines are disabled, actions
    /// enabled; "Change location…" and "Quit" are absent by default.
    #[test]
    fn menu_of_a_working_station() {
        let app = tauri::test::mock_app();
        let menu = TrayMenu::build(&app, &model(&snapshot(), &Policy::default())).unwrap();
        let items = texts(&menu);
        let order: Vec<&str> = items.iter().map(|(id, _, _)| id.as_str()).collect();
        assert_eq!(
            order,
            [
                ids::STATUS,
                ids::LOCATION,
                ids::CHORD,
                ids::LAST_CONTACT,
                ids::LAST_SELF_TEST,
                ids::HIDDEN_BUTTON,
                ids::CANCEL,
                ids::SELF_TEST,
                ids::HELP,
                ids::ABOUT
            ]
        );
        assert_eq!(find(&items, ids::STATUS).unwrap().1, "Duress: on");
        assert!(
            !find(&items, ids::STATUS).unwrap().2,
            "information is not clickable"
        );
        assert_eq!(
            find(&items, ids::LOCATION).unwrap().1,
            "Location: Bldg A, Floor 2, Room 214"
        );
        assert_eq!(
            find(&items, ids::CHORD).unwrap().1,
            "Chord: Ctrl+Alt+Shift+D"
        );
        assert_eq!(
            find(&items, ids::HIDDEN_BUTTON).unwrap().1,
            "Request assistance"
        );
        assert!(find(&items, ids::HIDDEN_BUTTON).unwrap().2);
        assert_eq!(find(&items, ids::CANCEL).unwrap().1, "I'm OK — cancel");
        assert_eq!(find(&items, ids::SELF_TEST).unwrap().1, labels::SELF_TEST);
        assert_eq!(find(&items, ids::HELP).unwrap().1, labels::HELP);
    }

    /// Policy decides the hidden item's label and whether Quit and "Change location…" exist.
    #[test]
    fn policy_shapes_the_menu() {
        let app = tauri::test::mock_app();
        let mut p = Policy::default();
        p.tray.allow_quit = true;
        p.tray.allow_user_location = true;
        p.tray.hidden_button_label = "Open print queue".into();
        let menu = TrayMenu::build(&app, &model(&snapshot(), &p)).unwrap();
        let items = texts(&menu);
        assert_eq!(
            find(&items, ids::HIDDEN_BUTTON).unwrap().1,
            "Open print queue"
        );
        assert_eq!(find(&items, ids::QUIT).unwrap().1, labels::QUIT);
        let change = items
            .iter()
            .position(|(i, _, _)| i == ids::CHANGE_LOCATION)
            .unwrap();
        let location = items
            .iter()
            .position(|(i, _, _)| i == ids::LOCATION)
            .unwrap();
        assert_eq!(change, location + 1, "right under the location");
    }

    /// Status changes reach the items in place (only those that changed); the same status
    /// again touches nothing; a press (queue + seq + contact moving) touches nothing.
    #[test]
    fn menu_follows_engine_status_and_ignores_presses() {
        let app = tauri::test::mock_app();
        let p = Policy::default();
        let base = snapshot();
        let menu = TrayMenu::build(&app, &model(&base, &p)).unwrap();
        assert_eq!(menu.apply(&model(&base, &p)).unwrap(), 0);

        let mut pressed = base.clone();
        pressed.queued = 1;
        pressed.last_seq += 1;
        pressed.last_contact_at = Some(NOW);
        assert_eq!(
            menu.apply(&model(&pressed, &p)).unwrap(),
            0,
            "a press changes nothing"
        );

        let mut down = pressed.clone();
        down.unreachable_since = Some(datetime!(2026-03-02 14:02 UTC));
        assert_eq!(menu.apply(&model(&down, &p)).unwrap(), 1);
        assert_eq!(
            find(&texts(&menu), ids::STATUS).unwrap().1,
            "Duress: receiver unreachable since 14:02 — 1 alert queued"
        );

        let mut taken = base.clone();
        taken.hotkey = HotkeyState::Unavailable {
            reason: "Ctrl+Alt+Shift+D is taken by another application".into(),
        };
        assert_eq!(
            menu.apply(&model(&taken, &p)).unwrap(),
            2,
            "status and chord lines"
        );
        let items = texts(&menu);
        assert_eq!(
            find(&items, ids::STATUS).unwrap().1,
            "Duress: chord unavailable: Ctrl+Alt+Shift+D is taken by another application"
        );
        assert_eq!(
            find(&items, ids::CHORD).unwrap().1,
            "Chord: unavailable (see Help)"
        );

        let mut disabled = base.clone();
        disabled.device_status = Some(DeviceStatus::Disabled);
        menu.apply(&model(&disabled, &p)).unwrap();
        assert_eq!(
            find(&texts(&menu), ids::STATUS).unwrap().1,
            "Duress: disabled by Security"
        );

        let mut fresh = base.clone();
        fresh.enrolled = false;
        fresh.device_id = None;
        let mut with_mail = p.clone();
        with_mail.help.security_email = Some("security@metrostate.edu".into());
        menu.apply(&model(&fresh, &with_mail)).unwrap();
        let items = texts(&menu);
        assert_eq!(
            find(&items, ids::STATUS).unwrap().1,
            "Duress: not enrolled — contact security@metrostate.edu"
        );
        assert!(
            find(&items, ids::ABOUT)
                .unwrap()
                .1
                .ends_with("— not enrolled")
        );

        let mut nokey = base.clone();
        nokey.keystore_problem = Some("no keystore: locked".into());
        menu.apply(&model(&nokey, &p)).unwrap();
        assert_eq!(
            find(&texts(&menu), ids::STATUS).unwrap().1,
            "Duress: not protected: no keystore"
        );
    }

    /// Covert acknowledgement: with the policy switch, a claimed incident adds one trailing
    /// period to the status line and changes no other item.
    #[test]
    fn covert_ack_changes_exactly_one_character() {
        let app = tauri::test::mock_app();
        let mut p = Policy::default();
        p.tray.covert_ack = true;
        let base = snapshot();
        let menu = TrayMenu::build(&app, &model(&base, &p)).unwrap();
        let before = texts(&menu);
        let mut claimed = base.clone();
        claimed.claimed_incidents = vec![uuid::Uuid::nil()];
        assert_eq!(menu.apply(&model(&claimed, &p)).unwrap(), 1);
        let after = texts(&menu);
        for (b, a) in before.iter().zip(&after) {
            if b.0 == ids::STATUS {
                assert_eq!(a.1, format!("{}.", b.1));
            } else {
                assert_eq!(a, b);
            }
        }
    }

    /// Clicking the hidden item or "Send a test alert" (the handler runs on the UI thread)
    /// only hands the press to the alarm thread, which makes it durable with source `tray`.
    #[test]
    fn menu_clicks_become_durable_tray_events() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(Policy::default(), dir.path().join("state")).unwrap();
        let (_hk_tx, hk_rx) = watch::channel(HotkeyState::NotApplicable);
        let (stop_tx, _stop_rx) = watch::channel(false);
        let app = tauri::test::mock_app();
        app.manage(AppState::new(
            engine.clone(),
            Alarm::spawn(engine.clone()),
            hk_rx,
            Session::X11,
            stop_tx,
        ));
        let handle = app.handle().clone();
        crate::tray::on_menu_event(&handle, ids::HIDDEN_BUTTON);
        crate::tray::on_menu_event(&handle, ids::SELF_TEST);
        crate::tray::on_menu_event(&handle, ids::QUIT); // not allowed by policy: ignored
        let deadline = Instant::now() + Duration::from_secs(10);
        while engine.pending().unwrap().len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let pending = engine.pending().unwrap();
        let kinds: Vec<(EventKind, Source)> =
            pending.iter().map(|e| (e.kind, e.claims.source)).collect();
        assert_eq!(
            kinds,
            [
                (EventKind::Duress, Source::Tray),
                (EventKind::Test, Source::Tray)
            ]
        );
    }
}
