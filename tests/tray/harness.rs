//! Harness of the tray tests (`tests/tests/tray_*.rs`, included with `#[path]`): a private
//! Xvfb per test, the real `duress-agent` tray app (debug build) with its own state dir and
//! policy, the real receiver, a StatusNotifierWatcher stub and a D-Bus menu reader
//! (`tests/tray/sni.py`), screenshots with `xwd`, PNG output.
//!
//! Every tool a test needs is checked first by [`require_tray_tools`]; a missing one FAILS the
//! test with its name and the Debian package that provides it — never a silent skip.
#![allow(dead_code)]

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use duress_tests::{AgentCli, ReceiverProcess, bin, free_port, require_secret_service, wait_until};

/// The location label every tray test's policy sets.
pub const LABEL: &str = "Bldg A, Floor 2, Room 214";

/// Python with python3-dbus/gi/xlib: Debian's own (a pyenv shim on PATH may lack them).
pub fn python() -> PathBuf {
    let system = PathBuf::from("/usr/bin/python3");
    if system.exists() {
        system
    } else {
        PathBuf::from("python3")
    }
}

/// A helper script in `tests/tray/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tray")
        .join(name)
}

/// Fails loudly, naming what is missing, unless every tool the tray tests use is present.
pub fn require_tray_tools() {
    require_secret_service();
    let mut missing = Vec::new();
    for (tool, package) in [
        ("Xvfb", "xvfb"),
        ("xdotool", "xdotool"),
        ("xwd", "x11-apps"),
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            missing.push(format!("{tool} (Debian package {package})"));
        }
    }
    for (module, package) in [
        ("dbus", "python3-dbus"),
        ("gi", "python3-gi"),
        ("Xlib", "python3-xlib"),
    ] {
        let ok = Command::new(python())
            .args(["-c", &format!("import {module}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            missing.push(format!("python module {module} (Debian package {package})"));
        }
    }
    assert!(
        missing.is_empty(),
        "\n\nTHE TRAY TESTS CANNOT RUN: missing {}.\nRun scripts/install-deps (it installs them) and \
         run the tests through scripts/test.\n",
        missing.join(", ")
    );
}

/// A private X server on a free display number (Xvfb picks it: `-displayfd`).
#[derive(Debug)]
pub struct Xvfb {
    pub display: String,
    child: Child,
}

impl Xvfb {
    pub fn start() -> Xvfb {
        let mut child = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                "1024x768x24",
                "-nolisten",
                "tcp",
                "-noreset",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn Xvfb");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("Xvfb stdout"))
            .read_line(&mut line)
            .expect("Xvfb prints its display number");
        let n: u32 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("Xvfb said {line:?}"));
        let display = format!(":{n}");
        let up = wait_until(Duration::from_secs(10), || {
            Command::new("xdotool")
                .arg("getdisplaygeometry")
                .env("DISPLAY", &display)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        assert!(up, "Xvfb {display} does not answer");
        Xvfb { display, child }
    }

    /// `xdotool ARGS` on this display; panics on failure.
    pub fn xdotool(&self, args: &[&str]) -> String {
        let out = Command::new("xdotool")
            .args(args)
            .env("DISPLAY", &self.display)
            .output()
            .expect("run xdotool");
        assert!(
            out.status.success(),
            "xdotool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Presses a chord like a person (`ctrl+alt+shift+d`).
    pub fn key(&self, chord: &str) {
        self.xdotool(&["key", chord]);
    }

    /// Ids of visible windows whose name matches `regex`.
    pub fn visible_windows(&self, regex: &str) -> Vec<String> {
        let out = Command::new("xdotool")
            .args(["search", "--onlyvisible", "--name", regex])
            .env("DISPLAY", &self.display)
            .output()
            .expect("run xdotool search");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The whole screen.
    pub fn screenshot_root(&self) -> Screenshot {
        self.xwd(&["-root"])
    }

    /// One window (its contents).
    pub fn screenshot_window(&self, id: &str) -> Screenshot {
        self.xwd(&["-id", id])
    }

    fn xwd(&self, target: &[&str]) -> Screenshot {
        let out = Command::new("xwd")
            .args(target)
            .args(["-silent", "-display", &self.display])
            .output()
            .expect("run xwd");
        assert!(
            out.status.success(),
            "xwd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Screenshot::from_xwd(&out.stdout)
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pixels of a screenshot, as RGB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screenshot {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl Screenshot {
    /// Decodes an XWD dump (ZPixmap, 24/32 bits per pixel — what Xvfb gives).
    pub fn from_xwd(data: &[u8]) -> Screenshot {
        let field =
            |i: usize| u32::from_be_bytes(data[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
        let header_size = field(0) as usize;
        let (width, height) = (field(4), field(5));
        let byte_order = field(7); // 0 = LSBFirst
        let bpp = field(11) as usize;
        let bytes_per_line = field(12) as usize;
        let (rmask, gmask, bmask) = (field(14), field(15), field(16));
        let ncolors = field(19) as usize;
        assert!(bpp == 32 || bpp == 24, "unexpected xwd depth {bpp}");
        let pixels = &data[header_size + ncolors * 12..];
        let channel = |v: u32, mask: u32| -> u8 {
            if mask == 0 {
                return 0;
            }
            ((v & mask) >> mask.trailing_zeros()) as u8
        };
        let mut rgb = Vec::with_capacity(width as usize * height as usize * 3);
        for y in 0..height as usize {
            let row = &pixels[y * bytes_per_line..];
            for x in 0..width as usize {
                let p = &row[x * bpp / 8..x * bpp / 8 + bpp / 8];
                let mut b = [0u8; 4];
                b[..p.len()].copy_from_slice(p);
                let v = if byte_order == 0 {
                    u32::from_le_bytes(b)
                } else {
                    u32::from_be_bytes(b) >> (32 - bpp)
                };
                rgb.extend_from_slice(&[channel(v, rmask), channel(v, gmask), channel(v, bmask)]);
            }
        }
        Screenshot { width, height, rgb }
    }

    /// How many distinct colours: a rendered page has many, a blank window one.
    pub fn distinct_colours(&self) -> usize {
        let mut seen = std::collections::HashSet::new();
        for p in self.rgb.chunks(3) {
            seen.insert((p[0], p[1], p[2]));
        }
        seen.len()
    }

    pub fn write_png(&self, path: &Path) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create artifacts dir");
        }
        let file = std::fs::File::create(path).expect("create png");
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), self.width, self.height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().expect("png header");
        w.write_image_data(&self.rgb).expect("png data");
    }
}

/// The folder test artifacts go to: `<workspace>/artifacts/tray`.
pub fn artifacts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("artifacts")
        .join("tray")
}

static WATCHER: Mutex<()> = Mutex::new(());

/// Makes sure a StatusNotifierWatcher exists on the session bus (the tray exports its menu only
/// then). The stub outlives the test binary and ends with the session bus (scripts/with-keyring).
pub fn ensure_sni_watcher() {
    let _one_at_a_time = WATCHER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let has = || {
        Command::new(python())
            .arg(script("sni.py"))
            .arg("has-watcher")
            .status()
            .is_ok_and(|s| s.success())
    };
    if has() {
        return;
    }
    let mut child = Command::new(python())
        .arg(script("sni.py"))
        .arg("watcher")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the StatusNotifierWatcher stub");
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
    assert_eq!(
        line.trim(),
        "ready",
        "the StatusNotifierWatcher stub did not start"
    );
    // Deliberately not waited for: it serves every test of this bus session.
    std::mem::forget(child);
}

/// One menu entry as read over D-Bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuEntry {
    pub label: String,
    pub enabled: bool,
}

/// A receiver, an enrolled agent installation and a private X server, in one temp dir.
#[derive(Debug)]
pub struct World {
    pub tmp: tempfile::TempDir,
    pub receiver: ReceiverProcess,
    pub agent: AgentCli,
    pub xvfb: Xvfb,
}

impl World {
    /// `policy_extra` is appended to the standard test policy (e.g. `[tray]` keys).
    pub fn new(policy_extra: &str) -> World {
        require_tray_tools();
        let tmp = tempfile::tempdir().expect("tempdir");
        let receiver = ReceiverProcess::start(&tmp.path().join("receiver"), free_port());
        let agent = AgentCli::enroll(
            &receiver,
            tmp.path().join("agent"),
            tmp.path().join("agent.toml"),
            LABEL,
            policy_extra,
        );
        let xvfb = Xvfb::start();
        World {
            tmp,
            receiver,
            agent,
            xvfb,
        }
    }

    /// The tray app command with this world's policy, state dir and display.
    pub fn tray_command(&self, log: &Path) -> Command {
        let mut cmd = Command::new(bin("duress-agent"));
        cmd.env("DURESS_AGENT_POLICY", &self.agent.policy)
            .env("DURESS_AGENT_STATE_DIR", &self.agent.state_dir)
            .env("DISPLAY", &self.xvfb.display)
            .env("XDG_CONFIG_HOME", self.tmp.path().join("config"))
            .env("NO_AT_BRIDGE", "1")
            .env("GDK_BACKEND", "x11")
            .env("RUST_LOG", "info,netlink_packet_route=error")
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("XDG_SESSION_TYPE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .expect("tray log"),
            ));
        cmd
    }

    /// Starts the tray app (`duress-agent` alone) and waits until it says it is ready.
    pub fn spawn_tray(&self, name: &str, env: &[(&str, &str)]) -> Tray {
        let log = self.tmp.path().join(format!("{name}.log"));
        let mut cmd = self.tray_command(&log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn the tray app");
        let tray = Tray { child, log };
        tray.wait_log("tray ready", Duration::from_secs(60));
        tray
    }

    /// `duress-receiver incidents list --json`.
    pub fn incidents(&self) -> Vec<serde_json::Value> {
        let out = self.receiver.admin(&["incidents", "list", "--json"]);
        serde_json::from_str(&out).expect("incidents JSON")
    }

    /// Waits for an incident whose first event came from `source`; returns it.
    pub fn wait_incident(&self, source: &str, timeout: Duration) -> Option<serde_json::Value> {
        let mut found = None;
        wait_until(timeout, || {
            found = self.incidents().into_iter().find(|i| i["source"] == source);
            found.is_some()
        });
        found
    }

    /// Stored events of kind `kind` (`duress`, `test`), from `events export`.
    pub fn events_of_kind(&self, kind: &str) -> Vec<serde_json::Value> {
        self.receiver
            .admin(&["events", "export"])
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("export JSON"))
            .filter(|e| e["kind"] == kind)
            .collect()
    }

    /// This device as the receiver lists it.
    pub fn device(&self) -> serde_json::Value {
        let out = self.receiver.admin(&["devices", "list", "--json"]);
        let devices: Vec<serde_json::Value> = serde_json::from_str(&out).expect("devices JSON");
        devices.into_iter().next().expect("one device")
    }
}

/// A running tray app.
#[derive(Debug)]
pub struct Tray {
    pub child: Child,
    pub log: PathBuf,
}

impl Tray {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits for `needle` in the log; panics with the log otherwise.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let ok = wait_until(timeout, || self.log_text().contains(needle));
        assert!(
            ok,
            "the tray never logged {needle:?}; log:\n{}",
            self.log_text()
        );
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The menu as read over D-Bus, or `None` while the item is not registered.
    pub fn menu(&self) -> Option<Vec<MenuEntry>> {
        let out = Command::new(python())
            .arg(script("sni.py"))
            .args(["menu", &self.pid().to_string()])
            .output()
            .expect("run sni.py menu");
        if !out.status.success() {
            return None;
        }
        let entries: Vec<serde_json::Value> =
            serde_json::from_slice(&out.stdout).expect("menu JSON");
        Some(
            entries
                .iter()
                .map(|e| MenuEntry {
                    label: e["label"].as_str().unwrap_or_default().to_owned(),
                    enabled: e["enabled"].as_bool().unwrap_or(true),
                })
                .collect(),
        )
    }

    /// Waits until the menu satisfies `check`; panics with the last menu otherwise.
    pub fn wait_menu(
        &self,
        timeout: Duration,
        what: &str,
        check: impl Fn(&[MenuEntry]) -> bool,
    ) -> Vec<MenuEntry> {
        let mut last = None;
        let ok = wait_until(timeout, || {
            last = self.menu();
            last.as_deref().is_some_and(&check)
        });
        assert!(
            ok,
            "tray menu never showed {what}; last menu: {last:#?}\nlog:\n{}",
            self.log_text()
        );
        last.unwrap_or_default()
    }

    /// The status line (the first item).
    pub fn status_line(menu: &[MenuEntry]) -> &str {
        menu.first().map(|e| e.label.as_str()).unwrap_or_default()
    }

    /// Clicks the first item whose label starts with `label`.
    pub fn click(&self, label: &str) {
        let out = Command::new(python())
            .arg(script("sni.py"))
            .args(["click", &self.pid().to_string(), label])
            .output()
            .expect("run sni.py click");
        assert!(
            out.status.success(),
            "clicking {label:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// SIGTERM, then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let child = &mut self.child;
        if !wait_until(Duration::from_secs(5), || {
            matches!(child.try_wait(), Ok(Some(_)))
        }) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
}

impl Drop for Tray {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Seconds since `t`, for messages.
pub fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}
