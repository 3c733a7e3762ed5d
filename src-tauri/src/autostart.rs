//! Start at login: the per-user entry is written (or refreshed, if the binary moved) at each
//! launch, unless a machine-wide entry installed by the package exists — then the user would
//! get two agents (the second would exit at once, but it is noise), so the per-user one is left
//! out. A failure is logged and noted in the status window; it never stops the agent.
//!
//! | OS | Per-user entry | Machine-wide entry (installers) |
//! |---|---|---|
//! | Linux | `$XDG_CONFIG_HOME/autostart/duress-agent.desktop` | `/etc/xdg/autostart/duress-agent.desktop`, or the systemd user service `/usr/lib/systemd/user/duress-agent.service` |
//! | Windows | `HKCU\…\CurrentVersion\Run` value `Duress` | `HKLM\…\CurrentVersion\Run` value `Duress` |
//! | macOS | `~/Library/LaunchAgents/org.duress.agent.plist` | `/Library/LaunchAgents/org.duress.agent.plist` |

use std::path::{Path, PathBuf};

use tauri::{AppHandle, Manager, Runtime};

use crate::app_state::AppState;

/// What [`refresh`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The per-user entry was written (or rewritten).
    Written(PathBuf),
    /// The per-user entry was already right.
    UpToDate(PathBuf),
    /// A machine-wide entry exists; no per-user entry is written.
    MachineWide(PathBuf),
}

/// Runs [`refresh`] on a short-lived thread (file or registry I/O stays off the UI thread).
pub fn refresh_in_background<R: Runtime>(app: AppHandle<R>) {
    let spawned = std::thread::Builder::new()
        .name("duress-autostart".into())
        .spawn(move || match std::env::current_exe() {
            Ok(exe) => match refresh(&exe) {
                Ok(outcome) => tracing::info!(?outcome, "autostart"),
                Err(e) => {
                    let message = format!("autostart could not be set up: {e}");
                    tracing::warn!("{message}");
                    if let Some(state) = app.try_state::<AppState>() {
                        state.note(message);
                    }
                }
            },
            Err(e) => tracing::warn!("autostart skipped: cannot find this program: {e}"),
        });
    if let Err(e) = spawned {
        tracing::warn!("autostart skipped: {e}");
    }
}

/// Writes or refreshes the per-user login entry that starts `exe`.
pub fn refresh(exe: &Path) -> Result<Outcome, String> {
    platform::refresh(exe)
}

#[cfg(target_os = "linux")]
mod platform {
    use super::*;

    pub const MACHINE_WIDE: &str = "/etc/xdg/autostart/duress-agent.desktop";
    /// The systemd user service the .deb installs (and enables for every user).
    pub const USER_UNIT: &str = "/usr/lib/systemd/user/duress-agent.service";

    pub fn refresh(exe: &Path) -> Result<Outcome, String> {
        if Path::new(USER_UNIT).exists() {
            return Ok(Outcome::MachineWide(PathBuf::from(USER_UNIT)));
        }
        let config = dirs::config_dir().ok_or("no per-user configuration directory")?;
        refresh_in(exe, &config.join("autostart"), Path::new(MACHINE_WIDE))
    }

    pub(super) fn refresh_in(
        exe: &Path,
        dir: &Path,
        machine_wide: &Path,
    ) -> Result<Outcome, String> {
        if machine_wide.exists() {
            return Ok(Outcome::MachineWide(machine_wide.to_owned()));
        }
        let path = dir.join("duress-agent.desktop");
        let wanted = desktop_entry(exe);
        if std::fs::read_to_string(&path).is_ok_and(|have| have == wanted) {
            return Ok(Outcome::UpToDate(path));
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::write(&path, wanted).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Outcome::Written(path))
    }

    /// A desktop entry (freedesktop autostart); `Exec` quoted per the Desktop Entry spec.
    pub(super) fn desktop_entry(exe: &Path) -> String {
        let exe = exe.display().to_string();
        let quoted = if exe
            .chars()
            .any(|c| c.is_whitespace() || "\"'\\$`".contains(c))
        {
            let escaped: String = exe
                .chars()
                .flat_map(|c| match c {
                    '"' | '`' | '$' | '\\' => vec!['\\', c],
                    c => vec![c],
                })
                .collect();
            format!("\"{escaped}\"")
        } else {
            exe
        };
        format!(
            "[Desktop Entry]\n\
             Type=Application\n\
             Name=Duress\n\
             Comment=Silent request for assistance (University Security)\n\
             Exec={quoted}\n\
             Terminal=false\n\
             NoDisplay=true\n\
             X-GNOME-Autostart-enabled=true\n"
        )
    }
}

#[cfg(target_os = "windows")]
mod platform {
    use std::os::windows::process::CommandExt as _;
    use std::process::Command;

    use super::*;

    const RUN: &str = r"Software\Microsoft\Windows\CurrentVersion\Run";
    /// No console window flashes when `reg.exe` runs.
    const CREATE_NO_WINDOW: u32 = 0x0800_0000;

    fn reg(args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new("reg")
            .args(args)
            .creation_flags(CREATE_NO_WINDOW)
            .output()
    }

    pub fn refresh(exe: &Path) -> Result<Outcome, String> {
        let hklm = format!(r"HKLM\{RUN}");
        if reg(&["query", &hklm, "/v", "Duress"]).is_ok_and(|o| o.status.success()) {
            return Ok(Outcome::MachineWide(PathBuf::from(hklm)));
        }
        let hkcu = format!(r"HKCU\{RUN}");
        let value = format!("\"{}\"", exe.display());
        let out = reg(&[
            "add", &hkcu, "/v", "Duress", "/t", "REG_SZ", "/d", &value, "/f",
        ])
        .map_err(|e| format!("reg add: {e}"))?;
        if out.status.success() {
            Ok(Outcome::Written(PathBuf::from(hkcu)))
        } else {
            Err(format!(
                "reg add: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

#[cfg(target_os = "macos")]
mod platform {
    use super::*;

    const LABEL: &str = "org.duress.agent";

    pub fn refresh(exe: &Path) -> Result<Outcome, String> {
        let machine = PathBuf::from(format!("/Library/LaunchAgents/{LABEL}.plist"));
        if machine.exists() {
            return Ok(Outcome::MachineWide(machine));
        }
        let home = dirs::home_dir().ok_or("no home directory")?;
        let dir = home.join("Library/LaunchAgents");
        let path = dir.join(format!("{LABEL}.plist"));
        let exe = exe
            .display()
            .to_string()
            .replace('&', "&amp;")
            .replace('<', "&lt;");
        let wanted = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \
             \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
             <plist version=\"1.0\"><dict>\n\
             <key>Label</key><string>{LABEL}</string>\n\
             <key>ProgramArguments</key><array><string>{exe}</string></array>\n\
             <key>RunAtLoad</key><true/>\n\
             <key>KeepAlive</key><dict><key>SuccessfulExit</key><false/></dict>\n\
             <key>ProcessType</key><string>Interactive</string>\n\
             </dict></plist>\n"
        );
        if std::fs::read_to_string(&path).is_ok_and(|have| have == wanted) {
            return Ok(Outcome::UpToDate(path));
        }
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::write(&path, wanted).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Outcome::Written(path))
    }
}

#[cfg(not(any(target_os = "linux", target_os = "windows", target_os = "macos")))]
mod platform {
    use super::*;

    pub fn refresh(_exe: &Path) -> Result<Outcome, String> {
        Err("autostart is not supported on this operating system".into())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::platform::{desktop_entry, refresh_in};
    use super::*;

    /// Written once, then up to date; rewritten when the program moved; skipped when the
    /// package installed a machine-wide entry.
    #[test]
    fn per_user_entry_refreshed_unless_machine_wide() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("autostart");
        let none = tmp.path().join("etc-xdg-autostart/duress-agent.desktop");
        let exe = Path::new("/opt/duress/duress-agent");
        let path = dir.join("duress-agent.desktop");
        assert_eq!(
            refresh_in(exe, &dir, &none).unwrap(),
            Outcome::Written(path.clone())
        );
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("Exec=/opt/duress/duress-agent\n")
        );
        assert_eq!(
            refresh_in(exe, &dir, &none).unwrap(),
            Outcome::UpToDate(path.clone())
        );
        let moved = Path::new("/usr/bin/duress-agent");
        assert_eq!(
            refresh_in(moved, &dir, &none).unwrap(),
            Outcome::Written(path.clone())
        );

        std::fs::create_dir_all(none.parent().unwrap()).unwrap();
        std::fs::write(&none, "x").unwrap();
        assert_eq!(
            refresh_in(exe, &dir, &none).unwrap(),
            Outcome::MachineWide(none)
        );
    }

    #[test]
    fn exec_is_quoted_when_needed() {
        assert!(
            desktop_entry(Path::new("/opt/My Apps/duress-agent"))
                .contains("Exec=\"/opt/My Apps/duress-agent\"\n")
        );
    }
}
