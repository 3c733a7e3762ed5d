//! The optional hotspot (`[tray] hotspot = "bottom-right"`, off by default): a 12×12 px
//! borderless, transparent, always-on-top window, absent from the taskbar, in a screen corner.
//! A double-click there raises an alarm (source `hotspot`) and nothing on screen changes. It is
//! the only webview that exists while no window is open, so it costs the WebKit processes.

use duress_agent_core::duress_core::{EventKind, Source};
use duress_agent_core::policy::Hotspot;
use tauri::{
    AppHandle, Manager, PhysicalPosition, Runtime, State, WebviewUrl, WebviewWindowBuilder,
};

use crate::app_state::AppState;

/// The hotspot window's label.
pub const LABEL: &str = "hotspot";
/// Its side, in logical pixels.
pub const SIZE: f64 = 12.0;

/// Opens the hotspot in `corner` on the primary monitor (on a helper thread). A failure is
/// noted; the agent runs on.
pub fn open<R: Runtime>(app: &AppHandle<R>, corner: Hotspot) {
    if corner == Hotspot::Off {
        return;
    }
    let app = app.clone();
    let spawned = std::thread::Builder::new()
        .name("duress-hotspot".into())
        .spawn(move || {
            if let Err(e) = build(&app, corner) {
                let message = format!("the hotspot could not be created: {e}");
                tracing::warn!("{message}");
                if let Some(state) = app.try_state::<AppState>() {
                    state.note(message);
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("the hotspot could not be created: {e}");
    }
}

fn build<R: Runtime>(app: &AppHandle<R>, corner: Hotspot) -> tauri::Result<()> {
    let window = WebviewWindowBuilder::new(app, LABEL, WebviewUrl::App("hotspot.html".into()))
        .title("")
        .inner_size(SIZE, SIZE)
        .resizable(false)
        .decorations(false)
        .transparent(true)
        .shadow(false)
        .always_on_top(true)
        .skip_taskbar(true)
        .focused(false)
        .visible(false)
        .build()?;
    if let Some(monitor) = window.primary_monitor()? {
        let (mw, mh) = (monitor.size().width as i32, monitor.size().height as i32);
        let (mx, my) = (monitor.position().x, monitor.position().y);
        let side = (SIZE * monitor.scale_factor()).round() as i32;
        let (x, y) = corner_position(corner, mx, my, mw, mh, side);
        window.set_position(PhysicalPosition::new(x, y))?;
    }
    window.show()?;
    Ok(())
}

/// Top-left pixel of a `side`-pixel square in `corner` of a monitor at (`mx`,`my`) of `mw`×`mh`.
pub fn corner_position(
    corner: Hotspot,
    mx: i32,
    my: i32,
    mw: i32,
    mh: i32,
    side: i32,
) -> (i32, i32) {
    let right = mx + mw - side;
    let bottom = my + mh - side;
    match corner {
        Hotspot::TopLeft | Hotspot::Off => (mx, my),
        Hotspot::TopRight => (right, my),
        Hotspot::BottomLeft => (mx, bottom),
        Hotspot::BottomRight => (right, bottom),
    }
}

/// The hotspot page reports a double-click. Only the hotspot window may call this.
#[tauri::command(async)]
pub fn hotspot_trigger(state: State<'_, AppState>) {
    state.alarm.raise(EventKind::Duress, Source::Hotspot);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corners() {
        assert_eq!(
            corner_position(Hotspot::TopLeft, 0, 0, 1920, 1080, 12),
            (0, 0)
        );
        assert_eq!(
            corner_position(Hotspot::TopRight, 0, 0, 1920, 1080, 12),
            (1908, 0)
        );
        assert_eq!(
            corner_position(Hotspot::BottomLeft, 0, 0, 1920, 1080, 12),
            (0, 1068)
        );
        assert_eq!(
            corner_position(Hotspot::BottomRight, 1920, 0, 1280, 1024, 24),
            (3176, 1000)
        );
    }
}
