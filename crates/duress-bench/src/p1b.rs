//! P1b: the real chord. The release tray agent runs under its own Xvfb, enrolled with a
//! receiver through its policy; `xdotool key ctrl+alt+shift+d` presses the default chord on
//! that X server; measured from just before xdotool runs to the console stream's frame.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::console::ConsoleStream;
use crate::receiver::ReceiverChild;
use crate::stats::Sample;
use crate::{Figures, Options};

/// Each press must reach the console within this.
const PER_PRESS_TIMEOUT: Duration = Duration::from_secs(10);

/// A child killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn run(opts: &Options, figures: &mut Figures) -> Option<Sample> {
    match measure(opts, figures).await {
        Ok(s) => Some(s),
        Err(e) => {
            let reason = format!("{e:#}").replace('\n', " ");
            figures.put("p1b_status", format!("unavailable({reason})"));
            None
        }
    }
}

fn require_tool(name: &str) -> anyhow::Result<()> {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    anyhow::ensure!(found, "{name} is not installed (scripts/install-deps)");
    Ok(())
}

/// Starts Xvfb on a free display and returns it with its number.
fn xvfb() -> anyhow::Result<(Killed, String)> {
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
        .context("starting Xvfb")?;
    let stdout = child.stdout.take().context("Xvfb stdout")?;
    let guard = Killed(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let display = format!(":{}", line.trim());
    anyhow::ensure!(display.len() > 1, "Xvfb gave no display number");
    Ok((guard, display))
}

fn write_policy(path: &Path, receiver: &ReceiverChild, token: &str) -> anyhow::Result<()> {
    std::fs::write(
        path,
        format!(
            "[[receivers]]\nurl = \"{}\"\nca_cert = \"{}\"\n\n[enrollment]\ntoken = \"{token}\"\n\n\
             [location]\nlabel = \"Bench P1b, Bldg A, Room 214\"\n",
            receiver.url,
            receiver.ca.display()
        ),
    )?;
    Ok(())
}

async fn measure(opts: &Options, figures: &mut Figures) -> anyhow::Result<Sample> {
    let agent_bin = crate::p2::tray_agent().map_err(anyhow::Error::msg)?;
    require_tool("Xvfb")?;
    require_tool("xdotool")?;
    let presses = opts.pick(10, 50);
    let dir = tempfile::tempdir_in(&opts.work_dir)?;
    let mut receiver =
        ReceiverChild::start(&dir.path().join("receiver"), opts.database.for_receiver()?)?;
    let token = crate::receiver::token(&receiver, 1).await?;
    let policy = dir.path().join("agent.toml");
    write_policy(&policy, &receiver, &token)?;
    let (_xvfb, display) = xvfb()?;
    let log = std::fs::File::create(dir.path().join("agent.log"))?;
    let _agent = Killed(
        Command::new(&agent_bin)
            .env("DISPLAY", &display)
            .env("NO_AT_BRIDGE", "1")
            .env("GDK_BACKEND", "x11")
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("DURESS_AGENT_POLICY", &policy)
            .env("DURESS_AGENT_STATE_DIR", dir.path().join("agent"))
            .env("RUST_LOG", "warn")
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("XDG_SESSION_TYPE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting the tray agent")?,
    );
    // Enrolled (through the policy token) and its chord grabbed.
    let deadline = Instant::now() + crate::p2::TRAY_START_TIMEOUT;
    loop {
        let devices = duress_receiver::admin::list_devices(receiver.location()).await?;
        if !devices.is_empty() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the tray agent did not enroll within {:?} (see its log)",
            crate::p2::TRAY_START_TIMEOUT
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut console =
        ConsoleStream::open(&receiver.location(), &receiver.url, &receiver.ca).await?;

    let mut times = Vec::with_capacity(presses);
    for i in 0..presses {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t0 = Instant::now();
        let ok = Command::new("xdotool")
            .args(["key", "ctrl+alt+shift+d"])
            .env("DISPLAY", &display)
            .status()
            .is_ok_and(|s| s.success());
        anyhow::ensure!(ok, "xdotool failed at press {i}");
        let arrival = tokio::time::timeout(PER_PRESS_TIMEOUT, console.arrivals.recv())
            .await
            .ok()
            .flatten()
            .with_context(|| format!("press {i} never reached the console"))?;
        times.push(arrival.at.saturating_duration_since(t0));
    }
    let s = Sample::new(&times);
    figures.put("p1b_status", "measured");
    figures.put("p1b_presses", s.len());
    s.put(figures, "p1b");
    receiver.stop();
    Ok(s)
}
