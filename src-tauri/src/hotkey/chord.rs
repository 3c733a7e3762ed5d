//! Pure chord helpers: the session kind, and the portal's trigger syntax.

/// The kind of graphical session, from the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    X11,
    Wayland,
    /// No display at all (a service, a plain TTY).
    None,
}

impl Session {
    /// From `XDG_SESSION_TYPE`, `WAYLAND_DISPLAY` and `DISPLAY`. A session that says what it is
    /// is believed; otherwise a Wayland socket wins over `DISPLAY` (XWayland sets both, and an X
    /// grab there is a silently dead chord).
    pub fn detect(
        xdg_session_type: Option<&str>,
        wayland_display: Option<&str>,
        display: Option<&str>,
    ) -> Session {
        let set = |v: Option<&str>| v.is_some_and(|v| !v.trim().is_empty());
        match xdg_session_type
            .map(|s| s.trim().to_ascii_lowercase())
            .as_deref()
        {
            Some("wayland") => return Session::Wayland,
            Some("x11") if set(display) => return Session::X11,
            _ => {}
        }
        if set(wayland_display) {
            Session::Wayland
        } else if set(display) {
            Session::X11
        } else {
            Session::None
        }
    }

    /// [`Session::detect`] on this process's environment.
    pub fn from_env() -> Session {
        let var = |k: &str| std::env::var(k).ok();
        Session::detect(
            var("XDG_SESSION_TYPE").as_deref(),
            var("WAYLAND_DISPLAY").as_deref(),
            var("DISPLAY").as_deref(),
        )
    }
}

/// A policy chord (`Ctrl+Alt+Shift+D`, `F13`) in the syntax of the XDG shortcuts
/// specification the GlobalShortcuts portal takes as `preferred_trigger`
/// (`CTRL+ALT+SHIFT+d`, `F13`): modifiers `CTRL`, `ALT`, `SHIFT`, `LOGO`, then an xkb keysym
/// name. `None` when a token is not understood.
pub fn portal_trigger(chord: &str) -> Option<String> {
    let mut mods = Vec::new();
    let mut key = None;
    for token in chord.split('+').map(str::trim) {
        if key.is_some() || token.is_empty() {
            return None;
        }
        match token.to_ascii_uppercase().as_str() {
            "CTRL" | "CONTROL" | "COMMANDORCONTROL" | "CMDORCTRL" => mods.push("CTRL"),
            "ALT" | "OPTION" => mods.push("ALT"),
            "SHIFT" => mods.push("SHIFT"),
            "SUPER" | "META" | "CMD" | "COMMAND" | "LOGO" => mods.push("LOGO"),
            upper => key = Some(keysym_name(token, upper)?),
        }
    }
    let key = key?;
    mods.push(&key);
    Some(mods.join("+"))
}

fn keysym_name(token: &str, upper: &str) -> Option<String> {
    let upper = upper
        .strip_prefix("KEY")
        .filter(|r| r.len() == 1)
        .unwrap_or(upper);
    let upper = upper
        .strip_prefix("DIGIT")
        .filter(|r| r.len() == 1)
        .unwrap_or(upper);
    if upper.len() == 1 {
        let c = upper.chars().next()?;
        return c
            .is_ascii_alphanumeric()
            .then(|| c.to_ascii_lowercase().to_string());
    }
    if let Some(n) = upper.strip_prefix('F').and_then(|n| n.parse::<u8>().ok())
        && (1..=35).contains(&n)
    {
        return Some(format!("F{n}"));
    }
    let named = match upper {
        "SPACE" => "space",
        "ENTER" | "RETURN" => "Return",
        "TAB" => "Tab",
        "ESCAPE" | "ESC" => "Escape",
        "PAUSE" => "Pause",
        "INSERT" => "Insert",
        "DELETE" => "Delete",
        "HOME" => "Home",
        "END" => "End",
        "PAGEUP" => "Page_Up",
        "PAGEDOWN" => "Page_Down",
        "SCROLLLOCK" => "Scroll_Lock",
        _ => {
            return (!token.is_empty()
                && token.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .then(|| token.to_owned());
        }
    };
    Some(named.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wayland is recognised from XDG_SESSION_TYPE or the Wayland socket (XWayland also sets
    /// DISPLAY — an X grab there would be a silently dead chord); X11 from DISPLAY.
    #[test]
    fn session_detection() {
        let d = Session::detect;
        assert_eq!(d(Some("wayland"), None, Some(":0")), Session::Wayland);
        assert_eq!(d(None, Some("wayland-0"), Some(":0")), Session::Wayland);
        assert_eq!(d(Some("x11"), None, Some(":0")), Session::X11);
        assert_eq!(d(Some("x11"), Some("wayland-0"), Some(":0")), Session::X11);
        assert_eq!(d(None, None, Some(":99")), Session::X11);
        assert_eq!(d(Some("tty"), None, Some(":1")), Session::X11);
        assert_eq!(d(None, Some(""), Some("")), Session::None);
        assert_eq!(d(Some("tty"), None, None), Session::None);
        assert_eq!(d(Some("x11"), None, None), Session::None);
    }

    #[test]
    fn portal_trigger_syntax() {
        assert_eq!(
            portal_trigger("Ctrl+Alt+Shift+D").as_deref(),
            Some("CTRL+ALT+SHIFT+d")
        );
        assert_eq!(portal_trigger("F13").as_deref(), Some("F13"));
        assert_eq!(portal_trigger("ctrl+F24").as_deref(), Some("CTRL+F24"));
        assert_eq!(portal_trigger("Super+KeyK").as_deref(), Some("LOGO+k"));
        assert_eq!(portal_trigger("Ctrl+Digit1").as_deref(), Some("CTRL+1"));
        assert_eq!(portal_trigger("Ctrl+Space").as_deref(), Some("CTRL+space"));
        assert_eq!(portal_trigger("Ctrl+"), None);
        assert_eq!(portal_trigger("Ctrl+D+E"), None);
        assert_eq!(portal_trigger("Ctrl+Alt"), None);
    }
}
