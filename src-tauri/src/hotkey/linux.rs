//! Linux: X11 grabs through global-hotkey — and our own grab for F13–F24 (USB pedals and panic
//! buttons) — or the GlobalShortcuts portal under Wayland.
//!
//! **Why F13–F24 are grabbed here, not by global-hotkey.** global-hotkey 0.9 looks for the
//! keycode that carries the keysym `F13` and finds none: with the evdev keycodes and the
//! xkeyboard-config symbols every current X server uses, the key a pedal sends as F13 (Linux
//! `KEY_F13` = 183, X keycode 191, key name `<FK13>`) carries `XF86Tools`, F14..F18
//! `XF86Launch5..9`, F20 `XF86AudioMicMute`, F21..F23 the touchpad keysyms, and F19 and F24 no
//! keysym at all. So for each such chord this module grabs the key named `<FK13>`..`<FK24>` in
//! the server's XKB keymap (keycode 191..202 under evdev) *and* any keycode the keymap gives
//! the keysym F13..F24 (an `xmodmap` or a non-evdev server), each with the four NumLock/
//! CapsLock variants global-hotkey uses, on its own X connection and thread, and feeds the same
//! [`ChordHandler`] (hold and repeat modes, cancel chords) as the other chords.

use std::collections::BTreeMap;
use std::str::FromStr as _;
use std::sync::Arc;

use duress_agent_core::duress_core::HotkeyState;
use global_hotkey::hotkey::{Code, HotKey, Modifiers};
use tokio::sync::watch;
use x11rb::connection::Connection as _;
use x11rb::errors::ReplyError;
use x11rb::protocol::xkb::{self, ConnectionExt as _};
use x11rb::protocol::xproto::{ConnectionExt as _, GrabMode, KeyButMask, Keycode, ModMask};
use x11rb::protocol::{ErrorKind, Event};
use x11rb::rust_connection::RustConnection;

use super::{ChordHandler, Registration, Session};

pub(super) fn start(
    chords: &[String],
    handler: Arc<ChordHandler>,
    state: &watch::Sender<HotkeyState>,
    rt: &tokio::runtime::Handle,
) -> Registration {
    match Session::from_env() {
        Session::Wayland => {
            super::portal::start(chords, handler, state.clone(), rt);
            Registration::none()
        }
        Session::None => {
            state.send_replace(HotkeyState::Unavailable {
                reason: "no graphical session (neither DISPLAY nor WAYLAND_DISPLAY is set)".into(),
            });
            Registration::none()
        }
        Session::X11 => {
            // global-hotkey's `register` answers Ok when its X thread has already died (for
            // want of a display): check first that an X server answers, or the chord would be
            // silently dead. The connection then serves the F13–F24 grabs.
            let conn = match x11rb::connect(None) {
                Ok(c) => c,
                Err(e) => {
                    state.send_replace(HotkeyState::Unavailable {
                        reason: format!("cannot reach the X server: {e}"),
                    });
                    return Registration::none();
                }
            };
            let all = super::grab::with_cancel_chords(chords, &handler);
            let (pedals, others): (Vec<String>, Vec<String>) =
                all.iter().cloned().partition(|c| pedal_chord(c).is_some());
            let (manager, mut registered, mut failures) = if others.is_empty() {
                (None, Vec::new(), Vec::new())
            } else {
                super::grab::register_these(&others, handler.clone(), |_, _| Ok(()))
            };
            let (pedal_grabs, pedal_registered, pedal_failures) = if pedals.is_empty() {
                (None, Vec::new(), Vec::new())
            } else {
                grab_pedals(conn, &pedals, handler.clone(), state.clone())
            };
            registered.extend(pedal_registered);
            failures.extend(pedal_failures);
            // In policy order, whichever back end grabbed them.
            let registered = all.into_iter().filter(|c| registered.contains(c)).collect();
            state.send_replace(super::grab::outcome(&handler, registered, failures));
            if manager.is_none() && pedal_grabs.is_none() {
                Registration::none()
            } else {
                Registration::keep((manager, pedal_grabs))
            }
        }
    }
}

/// Linux `KEY_F13` (183) + 8: the X keycode of F13 under the evdev keycodes, for a server that
/// does not answer XKB's key names.
const EVDEV_FK13: u8 = 191;
/// The core keysym `F13` (`XK_F13`); F13 + n is `XK_F13 + n` up to F24.
const XK_F13: u32 = 0xffca;

/// A chord whose key is F13..F24 (`Shift+F20`): its index (0 for F13) and the X modifier mask
/// of its modifiers, mapped as global-hotkey maps them. `None` for any other chord.
fn pedal_chord(chord: &str) -> Option<(u8, ModMask)> {
    let hk = HotKey::from_str(chord).ok()?;
    let n = match hk.key {
        Code::F13 => 0,
        Code::F14 => 1,
        Code::F15 => 2,
        Code::F16 => 3,
        Code::F17 => 4,
        Code::F18 => 5,
        Code::F19 => 6,
        Code::F20 => 7,
        Code::F21 => 8,
        Code::F22 => 9,
        Code::F23 => 10,
        Code::F24 => 11,
        _ => return None,
    };
    Some((n, x11_mods(hk.mods)))
}

fn x11_mods(m: Modifiers) -> ModMask {
    let mut x = ModMask::default();
    if m.contains(Modifiers::SHIFT) {
        x |= ModMask::SHIFT;
    }
    // global-hotkey reads Super as META.
    if m.contains(Modifiers::META) {
        x |= ModMask::M4;
    }
    if m.contains(Modifiers::ALT) {
        x |= ModMask::M1;
    }
    if m.contains(Modifiers::CONTROL) {
        x |= ModMask::CONTROL;
    }
    x
}

/// `XGrabKey` matches the modifier state exactly, and NumLock (Mod2) and CapsLock (Lock) are
/// modifiers while on: grab each chord with them as well (what global-hotkey does).
fn lock_variants() -> [ModMask; 4] {
    [
        ModMask::default(),
        ModMask::M2,
        ModMask::LOCK,
        ModMask::M2 | ModMask::LOCK,
    ]
}

/// What the grab thread needs to know of one grabbed chord.
#[derive(Debug)]
struct Grabbed {
    chord: String,
    mods: ModMask,
    cancel: bool,
    pressed: bool,
}

/// The X keycodes that send F13 + `n`: the key named `<FK13>` + n in the XKB keymap (or 191 + n
/// when the server does not name its keys), and every keycode carrying the keysym.
fn pedal_keycodes(
    n: u8,
    names: Option<&BTreeMap<[u8; 4], Keycode>>,
    keysyms: &BTreeMap<Keycode, Vec<u32>>,
) -> Vec<Keycode> {
    let mut codes = Vec::new();
    let name = format!("FK{}", 13 + n);
    match names {
        Some(names) => {
            let mut key = [0u8; 4];
            key.copy_from_slice(name.as_bytes());
            if let Some(&k) = names.get(&key) {
                codes.push(k);
            }
        }
        None => {
            let k = EVDEV_FK13 + n;
            if keysyms.contains_key(&k) {
                codes.push(k);
            }
        }
    }
    let sym = XK_F13 + u32::from(n);
    for (&k, syms) in keysyms {
        if syms.contains(&sym) && !codes.contains(&k) {
            codes.push(k);
        }
    }
    codes
}

/// The XKB key names of the server's keymap (`FK13` → 191), `None` when XKB does not answer.
fn key_names(conn: &RustConnection) -> Option<BTreeMap<[u8; 4], Keycode>> {
    let reply = conn
        .xkb_get_names(xkb::ID::USE_CORE_KBD.into(), xkb::NameDetail::KEY_NAMES)
        .ok()?
        .reply()
        .ok()?;
    let names = reply.value_list.key_names?;
    Some(
        names
            .iter()
            .enumerate()
            .filter_map(|(i, k)| {
                let code = reply.first_key.checked_add(u8::try_from(i).ok()?)?;
                Some((k.name, code))
            })
            .collect(),
    )
}

/// The core keyboard mapping: keycode → its keysyms.
fn keyboard_map(conn: &RustConnection) -> Result<BTreeMap<Keycode, Vec<u32>>, String> {
    let setup = conn.setup();
    let (min, max) = (setup.min_keycode, setup.max_keycode);
    let reply = conn
        .get_keyboard_mapping(min, max - min + 1)
        .map_err(|e| e.to_string())?
        .reply()
        .map_err(|e| e.to_string())?;
    let per = usize::from(reply.keysyms_per_keycode).max(1);
    Ok(reply
        .keysyms
        .chunks(per)
        .zip(min..=max)
        .map(|(syms, k)| (k, syms.to_vec()))
        .collect())
}

/// Grabs the F13–F24 chords `pedals` on `conn` and starts the thread that turns their presses
/// into [`ChordHandler`] calls. Returns what keeps the grabs (the connection), the chords
/// grabbed and the reasons of the others. If the X connection is later lost, `state` says so.
fn grab_pedals(
    (conn, screen): (RustConnection, usize),
    pedals: &[String],
    handler: Arc<ChordHandler>,
    state: watch::Sender<HotkeyState>,
) -> (Option<Arc<RustConnection>>, Vec<String>, Vec<String>) {
    let fail_all = |why: String| -> (Option<Arc<RustConnection>>, Vec<String>, Vec<String>) {
        let failures = pedals.iter().map(|c| format!("{c}: {why}")).collect();
        (None, Vec::new(), failures)
    };
    // Hold mode needs the release of a held key: without "detectable auto-repeat" X sends a
    // release before every auto-repeated press. XKB is on every current server; without it
    // a tap still works.
    let xkb_ok = conn
        .xkb_use_extension(1, 0)
        .ok()
        .and_then(|c| c.reply().ok())
        .is_some_and(|r| r.supported);
    if xkb_ok {
        let detectable = conn
            .xkb_per_client_flags(
                xkb::ID::USE_CORE_KBD.into(),
                xkb::PerClientFlag::DETECTABLE_AUTO_REPEAT,
                xkb::PerClientFlag::DETECTABLE_AUTO_REPEAT,
                Default::default(),
                Default::default(),
                Default::default(),
            )
            .ok()
            .and_then(|c| c.reply().ok());
        if detectable.is_none() {
            tracing::warn!("X server refused detectable auto-repeat: holding F13–F24 may misfire");
        }
    } else {
        tracing::warn!("X server without XKB: F13–F24 found by keycode 191+ (evdev) and keysym");
    }
    let keysyms = match keyboard_map(&conn) {
        Ok(k) => k,
        Err(e) => return fail_all(format!("cannot read the keyboard map: {e}")),
    };
    let names = if xkb_ok { key_names(&conn) } else { None };
    let root = conn.setup().roots[screen].root;
    let mut grabs: BTreeMap<Keycode, Vec<Grabbed>> = BTreeMap::new();
    let mut registered = Vec::new();
    let mut failures = Vec::new();
    for chord in pedals {
        let Some((n, mods)) = pedal_chord(chord) else {
            continue;
        };
        let codes = pedal_keycodes(n, names.as_ref(), &keysyms);
        if codes.is_empty() {
            failures.push(format!(
                "{chord}: the keyboard map has no key for F{}",
                13 + n
            ));
            continue;
        }
        match grab_all(&conn, root, &codes, mods) {
            Ok(()) => {
                for &k in &codes {
                    grabs.entry(k).or_default().push(Grabbed {
                        chord: chord.clone(),
                        mods,
                        cancel: handler.is_cancel(chord),
                        pressed: false,
                    });
                }
                tracing::info!(chord, keycodes = ?codes, "F13–F24 chord grabbed");
                registered.push(chord.clone());
            }
            Err(GrabError::Taken) => {
                failures.push(format!("{chord} is taken by another application"));
            }
            Err(GrabError::Other(e)) => failures.push(format!("{chord}: {e}")),
        }
    }
    if registered.is_empty() {
        return (None, registered, failures);
    }
    let conn = Arc::new(conn);
    let thread_conn = conn.clone();
    let spawned = std::thread::Builder::new()
        .name("duress-x11-fkeys".into())
        .spawn(move || {
            let e = event_loop(&thread_conn, grabs, &handler);
            tracing::error!("F13–F24 chords stopped: lost the X server connection: {e}");
            state.send_replace(HotkeyState::Unavailable {
                reason: format!("lost the X server connection: {e}"),
            });
        });
    match spawned {
        Ok(_) => (Some(conn), registered, failures),
        Err(e) => fail_all(format!("cannot start the key thread: {e}")),
    }
}

enum GrabError {
    Taken,
    Other(String),
}

/// Grabs every keycode of one chord with every lock variant, or none of them (a chord half
/// grabbed would work only with NumLock off, say — a chord that is dead at random).
fn grab_all(
    conn: &RustConnection,
    root: u32,
    codes: &[Keycode],
    mods: ModMask,
) -> Result<(), GrabError> {
    let mut done = Vec::new();
    let mut outcome = Ok(());
    'all: for &k in codes {
        for lock in lock_variants() {
            let result = conn
                .grab_key(
                    false,
                    root,
                    mods | lock,
                    k,
                    GrabMode::ASYNC,
                    GrabMode::ASYNC,
                )
                .map_err(|e| e.to_string())
                .and_then(|c| match c.check() {
                    Ok(()) => Ok(()),
                    Err(ReplyError::X11Error(e)) if e.error_kind == ErrorKind::Access => {
                        Err(String::new())
                    }
                    Err(e) => Err(e.to_string()),
                });
            match result {
                Ok(()) => done.push((k, mods | lock)),
                Err(e) => {
                    outcome = Err(if e.is_empty() {
                        GrabError::Taken
                    } else {
                        GrabError::Other(e)
                    });
                    break 'all;
                }
            }
        }
    }
    if outcome.is_err() {
        for (k, m) in done {
            if let Ok(c) = conn.ungrab_key(k, root, m) {
                c.ignore_error();
            }
        }
    }
    outcome
}

/// Delivers presses and releases of the grabbed keys until the connection fails (then returns
/// why). Auto-repeat (a held key, with detectable auto-repeat) is one press.
fn event_loop(
    conn: &RustConnection,
    mut grabs: BTreeMap<Keycode, Vec<Grabbed>>,
    handler: &Arc<ChordHandler>,
) -> String {
    // Lock modifiers and mouse buttons in the event state are not part of a chord.
    let chord_mask = KeyButMask::CONTROL | KeyButMask::SHIFT | KeyButMask::MOD1 | KeyButMask::MOD4;
    loop {
        let event = match conn.wait_for_event() {
            Ok(e) => e,
            Err(e) => return e.to_string(),
        };
        match event {
            Event::KeyPress(e) => {
                let mods = ModMask::from((e.state & chord_mask).bits());
                for g in grabs.get_mut(&e.detail).into_iter().flatten() {
                    if g.mods == mods && !g.pressed {
                        g.pressed = true;
                        tracing::debug!(chord = g.chord, "F13–F24 chord pressed");
                        if g.cancel {
                            handler.cancel_pressed();
                        } else {
                            handler.pressed();
                        }
                    }
                }
            }
            Event::KeyRelease(e) => {
                // Whatever the modifiers are by now: a pedal's modifier may be let go first.
                for g in grabs.get_mut(&e.detail).into_iter().flatten() {
                    if g.pressed {
                        g.pressed = false;
                        if !g.cancel {
                            handler.released();
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pedal_chords_are_f13_to_f24() {
        assert_eq!(pedal_chord("F13"), Some((0, ModMask::default())));
        assert_eq!(pedal_chord("Shift+F20"), Some((7, ModMask::SHIFT)));
        assert_eq!(
            pedal_chord("Ctrl+Alt+F24"),
            Some((11, ModMask::CONTROL | ModMask::M1))
        );
        assert_eq!(pedal_chord("F12"), None);
        assert_eq!(pedal_chord("Ctrl+Alt+Shift+D"), None);
        assert_eq!(pedal_chord("F25"), None);
    }

    /// The evdev map as Xvfb has it: `<FK13>` at 191 carries XF86Tools, `<FK19>` at 197 no
    /// keysym; a keysym F13 someone mapped elsewhere is grabbed too.
    #[test]
    fn keycodes_by_key_name_and_by_keysym() {
        let mut keysyms = BTreeMap::new();
        keysyms.insert(191, vec![0x1008ff81, 0, 0x1008ff81]);
        keysyms.insert(197, vec![0, 0]);
        keysyms.insert(250, vec![XK_F13]);
        let mut names = BTreeMap::new();
        names.insert(*b"FK13", 191);
        names.insert(*b"FK19", 197);
        assert_eq!(pedal_keycodes(0, Some(&names), &keysyms), [191, 250]);
        assert_eq!(pedal_keycodes(6, Some(&names), &keysyms), [197]);
        assert!(pedal_keycodes(11, Some(&names), &keysyms).is_empty());
        // Without XKB names: the evdev keycode, if the server has it.
        assert_eq!(pedal_keycodes(0, None, &keysyms), [191, 250]);
        assert!(pedal_keycodes(1, None, &keysyms).is_empty());
    }
}
