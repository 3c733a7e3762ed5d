#!/usr/bin/env python3
"""The Windows agent and its MSI under Wine, against the real Linux receiver (issue 19).

Run by tests/windows/run (which cross-builds the agent and builds the two MSIs first); every
step drives the real artefacts: the cross-built duress-agent.exe inside the wixl-built MSI,
installed by Wine's msiexec into a fresh prefix, reading its policy from the registry the MSI
wrote through the agent's winreg reader, keeping its device key in Credential Manager (keyring's
Windows store over Wine's CredWrite/CredRead), and delivering to target/debug/duress-receiver
on 127.0.0.1.

Each step prints `windows: <step> ok (<seconds> s)`; the first failure stops the suite with
what was expected, what was seen, and the output of the command at fault. What Wine cannot do
is printed in lines starting `windows: WINE LACKS:` and the step says how far it got: nothing is
skipped silently.
"""

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WINE = "/usr/lib/wine/wine64"
WINESERVER = "/usr/lib/wine/wineserver"
INSTALLDIR = r"C:\Program Files\Duress"
EXE = INSTALLDIR + r"\duress-agent.exe"
MACHINE_KEY = r"HKLM\SOFTWARE\Duress\Agent"
POLICY_KEY = r"HKLM\SOFTWARE\Policies\Duress\Agent"
RUN_KEY = r"SOFTWARE\Microsoft\Windows\CurrentVersion\Run"
CRED_KEY = r"HKCU\Software\Wine\Credential Manager"
CRED_KEY_EXPORTED = r"HKEY_CURRENT_USER\Software\Wine\Credential Manager"
LABEL = "Bldg A, Floor 2, Room 214"

started_at = time.monotonic()
wine_lacks = []


class Failure(Exception):
    pass


def log(msg):
    print(f"windows: {msg}", flush=True)


def lacks(msg):
    if msg in wine_lacks:
        return
    wine_lacks.append(msg)
    print(f"windows: WINE LACKS: {msg}", flush=True)


def check(cond, what, seen=""):
    if not cond:
        raise Failure(f"{what}" + (f"\n--- seen:\n{seen}" if seen else ""))


def wait_for(what, fn, timeout, interval=0.5):
    """Polls fn() until it returns a true value; fails with `what` and the last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise Failure(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


class Suite:
    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="duress-wine-"))
        self.prefix = self.tmp / "prefix"
        self.data = self.tmp / "receiver"
        self.receiver = None
        self.xvfb = None
        self.display = None
        self.procs = []
        self.port = free_port()
        self.env = dict(os.environ)
        self.env.update(
            WINEPREFIX=str(self.prefix),
            WINEDLLOVERRIDES="mscoree,mshtml=",
            WINEDEBUG="-all",
            WINEARCH="win64",
            NO_AT_BRIDGE="1",
        )
        # The agent must read the registry, never a policy file from the environment.
        for k in ("DURESS_AGENT_POLICY", "DURESS_AGENT_STATE_DIR", "RUST_LOG"):
            self.env.pop(k, None)

    # ---- plumbing -------------------------------------------------------------------------

    def run(self, argv, timeout=120, ok=True, env=None, what=None):
        p = subprocess.run(
            argv,
            env=env or self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            timeout=timeout,
        )
        if ok and p.returncode != 0:
            raise Failure(
                f"{what or ' '.join(argv)} exited {p.returncode}\n--- stdout:\n{p.stdout}\n--- stderr:\n{p.stderr}"
            )
        return p

    def wine(self, *argv, **kw):
        return self.run([WINE, *argv], **kw)

    def agent(self, *argv, **kw):
        return self.wine(EXE, *argv, **kw)

    def receiver_cli(self, *argv):
        p = self.run([self.args.receiver, *argv, "--data-dir", str(self.data)])
        return p.stdout

    def devices(self):
        return json.loads(self.receiver_cli("devices", "list", "--json"))

    def incidents(self):
        return json.loads(self.receiver_cli("incidents", "list", "--json"))

    def reg_values(self, key):
        """`reg query KEY` as {name: (type, data)} (the key's own values only); None if absent."""
        p = self.wine("reg", "query", key, ok=False)
        if p.returncode != 0:
            return None
        out = {}
        for line in p.stdout.splitlines():
            m = re.match(r"^    (\S.*?)    (REG_\w+)    ?(.*)$", line)
            if m:
                out[m.group(1)] = (m.group(2), m.group(3).rstrip("\r"))
        return out

    def drive_c(self, win_path):
        return self.prefix / "drive_c" / win_path[3:].replace("\\", "/")

    def start_receiver(self):
        logpath = self.tmp / "receiver.log"
        offset = logpath.stat().st_size if logpath.exists() else 0
        self.receiver = subprocess.Popen(
            [self.args.receiver, "serve", "--data-dir", str(self.data), "--listen", f"127.0.0.1:{self.port}"],
            stdout=open(self.tmp / "receiver.log", "ab"),
            stderr=subprocess.STDOUT,
        )
        line = f"listening on https://127.0.0.1:{self.port}"
        wait_for("the receiver to listen", lambda: line in logpath.read_bytes()[offset:].decode(errors="replace")
                 or self.receiver.poll() is not None, 60)
        check(self.receiver.poll() is None, "the receiver exited", (self.tmp / "receiver.log").read_text())
        check(port_open(self.port), f"nothing answers on 127.0.0.1:{self.port}")

    def stop_receiver(self):
        if self.receiver and self.receiver.poll() is None:
            self.receiver.send_signal(signal.SIGTERM)
            self.receiver.wait(30)
        self.receiver = None

    def start_xvfb(self):
        r, w = os.pipe()
        self.xvfb = subprocess.Popen(
            ["Xvfb", "-displayfd", str(w), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
            pass_fds=(w,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(w)
        number = b""
        while not number.endswith(b"\n"):
            chunk = os.read(r, 16)
            check(chunk, "Xvfb did not report its display number")
            number += chunk
        os.close(r)
        self.display = f":{number.decode().strip()}"
        self.env["DISPLAY"] = self.display

    def spawn_agent(self, *argv, name):
        logf = open(self.tmp / f"{name}.log", "wb")
        p = subprocess.Popen([WINE, EXE, *argv], env=self.env, stdout=logf, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def agent_pids(self):
        """Linux pids of running duress-agent.exe processes of this prefix."""
        pids = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")
                env = (d / "environ").read_bytes()
            except OSError:
                continue
            if any(c.lower().endswith(b"duress-agent.exe") for c in cmd) and (
                f"WINEPREFIX={self.prefix}".encode() in env
            ):
                pids.append(int(d.name))
        return pids

    def kill_agents(self):
        for pid in self.agent_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs = []
        wait_for("every agent to exit", lambda: not self.agent_pids(), 20)

    def cleanup(self):
        try:
            self.kill_agents()
        except Exception as e:  # noqa: BLE001 - best effort at exit
            log(f"cleanup: {e}")
        self.stop_receiver()
        subprocess.run([WINESERVER, "-k"], env=self.env, stderr=subprocess.DEVNULL)
        if self.xvfb:
            self.xvfb.terminate()
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            log(f"kept {self.tmp}")

    # ---- steps ----------------------------------------------------------------------------

    def step_prefix(self):
        """A fresh Wine prefix and a receiver with an enrollment token."""
        self.start_xvfb()
        self.wine("wineboot", "--init", timeout=300)
        self.run([WINESERVER, "-w"], timeout=120)
        self.port = free_port()
        system32 = self.prefix / "drive_c/windows/system32"
        if not (system32 / "bcryptprimitives.dll").exists():
            lacks("bcryptprimitives.dll: Wine 8 does not ship it, and Rust's std (1.78+) imports "
                  "bcryptprimitives!ProcessPrng, so no Rust .exe starts (c0000135). The suite puts a "
                  "test-only ProcessPrng over RtlGenRandom (tests/windows/bcryptprimitives.c) into the "
                  "prefix's system32; Windows 10 and later have the real DLL, the MSI never carries it")
            shutil.copy(self.args.bcryptprimitives, system32 / "bcryptprimitives.dll")
        self.start_receiver()
        cert = (self.data / "tls" / "cert.pem").read_text()
        self.pin = hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert)).hexdigest().upper()
        self.pin = ":".join(self.pin[i : i + 2] for i in range(0, 64, 2))
        self.token = self.receiver_cli("token", "create", "--uses", "10", "--approve", "auto").strip().splitlines()[-1]
        check(self.token.startswith("det_"), "token create printed no token", self.token)

    def step_install(self):
        """Silent install with properties: files, registry values read back, empty properties
        left out, the Run value, the scheduled task, the token kept out of the verbose log."""
        msi = winpath(self.args.msi)
        logfile = r"C:\install.log"
        self.wine(
            "msiexec", "/i", msi, "/qn", "/norestart", "/l*v", logfile,
            f"RECEIVER_URL=https://127.0.0.1:{self.port}",
            f"RECEIVER_CA_SHA256={self.pin}",
            f"ENROLL_TOKEN={self.token}",
            f"LOCATION_LABEL={LABEL}",
            "LOCATION_BUILDING=A",
            "LOCATION_ROOM=214",
            timeout=180,
            what="msiexec /i (first install)",
        )
        installed = self.drive_c(EXE)
        check(installed.read_bytes() == Path(self.args.exe).read_bytes(),
              f"{installed} is not the cross-built agent {self.args.exe}")
        check(pe_subsystem(installed.read_bytes()) == 2,
              "duress-agent.exe is a GUI-subsystem program (a console one gets a console window "
              "from Windows at logon)", pe_subsystem(installed.read_bytes()))
        loader = self.drive_c(INSTALLDIR + r"\WebView2Loader.dll")
        check(loader.is_file() and loader.read_bytes()[:2] == b"MZ", f"no WebView2Loader.dll (a PE file) in {INSTALLDIR}")
        self.expect_machine_values(room="214")
        run = self.reg_values(rf"HKLM\{RUN_KEY}") or {}
        check(run.get("Duress") == ("REG_SZ", f'"{EXE}"'), "HKLM Run value Duress", run)
        self.check_task(present=True)
        text = self.drive_c(logfile).read_bytes().decode("utf-16", errors="replace") if self.drive_c(logfile).read_bytes()[:2] == b"\xff\xfe" else self.drive_c(logfile).read_text(errors="replace")
        check("MsiHiddenProperties" in text or "ENROLL_TOKEN" in text, "msiexec wrote a verbose log", text[:2000])
        if self.token in text:
            leaks = [l.strip()[:90] for l in text.splitlines() if self.token in l]
            lacks("MsiHiddenProperties: Wine's msi writes the hidden ENROLL_TOKEN into the /l*v log "
                  f"({len(leaks)} lines, e.g. {leaks[-1].split('=')[0].strip()!r} and the "
                  "WriteRegistryValues 'Value:' line); the MSI lists it in MsiHiddenProperties and "
                  "marks the copying actions HideTarget, which Windows honours: check the log on a "
                  "real machine")

    def expect_machine_values(self, room):
        want = {
            r"receivers\0": {"url": f"https://127.0.0.1:{self.port}", "ca_sha256": self.pin},
            "enrollment": {"token": self.token},
            "location": {"label": LABEL, "BLD": "A", "ROOM": room},
        }
        for sub, values in want.items():
            got = self.reg_values(rf"{MACHINE_KEY}\{sub}")
            check(got is not None, rf"{MACHINE_KEY}\{sub} missing")
            check({k: v[1] for k, v in got.items()} == values,
                  rf"{MACHINE_KEY}\{sub}: exactly {values} (no empty value for a property not given)", got)
            check(all(t == "REG_SZ" for t, _ in got.values()), "REG_SZ values", got)
        # LOCATION_FLOOR and HOTKEY were not given: no value at all, not an empty string.
        hotkey = self.reg_values(rf"{MACHINE_KEY}\hotkey")
        check(not hotkey, rf"{MACHINE_KEY}\hotkey holds values for a property not given", hotkey)

    def check_task(self, present):
        """The scheduled task the MSI registers with schtasks (Wine keeps it as a file)."""
        task = self.prefix / "drive_c/windows/system32/tasks/Duress/Agent"
        if not present:
            check(not task.exists(), r"the scheduled task \Duress\Agent is still registered after uninstall")
            return
        check(task.is_file(), r"schtasks did not register \Duress\Agent (custom action CreateScheduledTask)")
        xml = task.read_text(encoding="utf-8-sig", errors="replace")
        check("<URI>\\Duress\\Agent</URI>" in xml and "IgnoreNew" in xml and "<ExecutionTimeLimit>PT0S" in xml,
              "the registered task carries the MSI's registration info and settings", xml)
        if "LogonTrigger" not in xml or "RestartOnFailure" not in xml or "duress-agent.exe" not in xml:
            lacks("Task Scheduler: Wine 8's taskschd keeps a task's registration info and settings but drops "
                  "its LogonTrigger, Repetition, RestartOnFailure, Principal GroupId and the Exec command "
                  "(it stores <Triggers/> and <Exec/>), and has no engine that runs tasks at logon: the "
                  "task's start-at-logon and come-back-when-killed behaviour needs a real Windows machine")

    def step_cli(self):
        """status/enroll/trigger under Wine with the policy from the registry (winreg reader); the
        incident arrives at the receiver with the MSI's location; the device key is in Credential
        Manager and nowhere in a file."""
        st = json.loads(self.agent("status", "--json").stdout)
        text = json.dumps(st)
        check(f"https://127.0.0.1:{self.port}" in text, "status --json names the MSI's receiver", text)
        check(LABEL in text, "status --json shows the MSI's location label", text)
        check(st.get("enrolled") is False and st.get("keystore_problem") is None,
              "not enrolled yet, keystore usable", st)

        p = self.agent("enroll", timeout=120, ok=False)
        if p.returncode != 0 and "-2147024809" in p.stderr:
            raise Failure(
                "enroll: TLS setup failed with E_INVALIDARG. Wine 8's CertCreateCertificateChainEngine "
                "rejects the Windows 8+ CERT_CHAIN_ENGINE_CONFIG that rustls-platform-verifier's "
                "Verifier::new_with_extra_roots passes, even with no extra root: the agent must use "
                "Verifier::new when the policy names no ca_cert (crates/duress-agent-core/src/sender.rs, "
                f"tls_config_pinned)\n--- stderr:\n{p.stderr}")
        check(p.returncode == 0, f"enroll exited {p.returncode}", p.stdout + p.stderr)
        devices = self.devices()
        check(len(devices) == 1, "one device enrolled", devices)
        dev = devices[0]
        check(dev["status"] == "active", "device active", dev)
        check(dev["location"].get("label") == LABEL and dev["location"].get("ROOM") == "214",
              "the enrolled device has the MSI's location", dev["location"])
        check("windows" in dev["host"]["os"].lower(), "host facts say Windows", dev["host"])
        self.device = dev

        p = self.agent("trigger", timeout=60)
        event_id = p.stdout.strip().splitlines()[0] if p.stdout.strip() else ""
        check(re.fullmatch(r"[0-9a-f-]{36}", event_id or ""), "trigger prints the event id", p.stdout + p.stderr)
        check("delivered" in p.stdout, "trigger says delivered", p.stdout + p.stderr)
        inc = wait_for("the incident at the receiver", lambda: self.incident_with(event_id), 30)
        check(inc["location"].get("label") == LABEL and inc["location"].get("ROOM") == "214"
              and inc["location"].get("BLD") == "A", "the incident carries the MSI's location", inc["location"])
        check(inc["source"] == "cli", "source cli", inc)

        self.check_credential_manager()

    def incident_with(self, event_id):
        for inc in self.incidents():
            if any(e["id"] == event_id for e in inc["events"]):
                return inc
        return None

    def check_credential_manager(self):
        """The seed is in Wine's Credential Manager (its registry store, RC4 under the store's
        EncryptionKey, as Wine's advapi32 keeps it), derives the public key the receiver
        enrolled, and appears in no file the agent wrote."""
        p = self.wine("reg", "query", CRED_KEY, "/s")
        blocks = p.stdout.split("\n\n")
        ours = [b for b in blocks if "org.duress.agent" in b and "device-key-" in b]
        check(len(ours) == 1, "one Credential Manager entry for the device key (keyring windows-native)", p.stdout)
        # The store's values as a .reg export (outside C:\, so the scan below does not see it).
        export = self.tmp / "credential-manager.reg"
        self.wine("reg", "export", CRED_KEY, winpath(export), "/y")
        raw = export.read_bytes()
        user_reg = raw.decode("utf-16") if raw[:2] == b"\xff\xfe" else raw.decode(errors="replace")
        user_reg = user_reg.replace("\r\n", "\n")
        enc_key = reg_binary(user_reg, CRED_KEY_EXPORTED, "EncryptionKey")
        m = re.search(r"Generic: (device-key-[^\]\\]+?\.org\.duress\.agent)", user_reg)
        check(m, "a Generic credential named device-key-<install id>.org.duress.agent", user_reg[-3000:])
        blob = reg_binary(user_reg, CRED_KEY_EXPORTED + r"\Generic: " + m.group(1), "Password")
        seed = rc4(enc_key, blob)
        check(len(seed) == 32, f"the credential holds a 32-byte seed (found {len(seed)} bytes)")
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives import serialization

        public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        x = base64.urlsafe_b64encode(public).rstrip(b"=").decode()
        check(x == self.device["public_jwk"]["x"],
              "the seed in Credential Manager is the key the receiver enrolled", (x, self.device["public_jwk"]))
        needles = [seed, seed.hex().encode(), seed.hex().upper().encode(),
                   base64.b64encode(seed).rstrip(b"="), base64.urlsafe_b64encode(seed).rstrip(b"=")]
        for path in (self.prefix / "drive_c").rglob("*"):
            if path.is_file() and not path.is_symlink() and path.stat().st_size < 64 << 20:
                data = path.read_bytes()
                for n in needles:
                    check(n not in data, f"the device key seed is written in {path}")
        log("credential manager: seed found only in Wine's credential store, matches the enrolled key")

    def step_queue_and_run(self):
        """With the receiver down, trigger keeps the alarm queued (exit 0); `run --headless`
        delivers it once the receiver is back, and heartbeats arrive."""
        self.stop_receiver()
        p = self.agent("trigger", timeout=60)
        event_id = p.stdout.strip().splitlines()[0]
        check(re.fullmatch(r"[0-9a-f-]{36}", event_id), "trigger prints the event id while offline", p.stdout + p.stderr)
        check("queued:" in p.stdout, "trigger says queued while the receiver is down", p.stdout)
        st = json.loads(self.agent("status", "--json").stdout)
        check(st.get("queued") == 1, "status --json shows the alarm queued", st)
        self.start_receiver()
        check(self.incident_with(event_id) is None, "not delivered before run")
        self.spawn_agent("run", "--headless", name="run-headless")
        inc = wait_for("run --headless to deliver the queued alarm", lambda: self.incident_with(event_id), 60)
        check(inc["location"].get("ROOM") == "214", "queued alarm keeps the MSI's location", inc)
        wait_for("a heartbeat from run --headless",
                 lambda: self.devices()[0].get("last_heartbeat_at"), 60)
        dev = self.devices()[0]
        check(dev["hotkey"] == {"state": "not_applicable"}, "headless reports no chord", dev["hotkey"])
        self.kill_agents()

    def step_policy_precedence(self):
        """HKLM\\SOFTWARE\\Policies\\Duress\\Agent (GPO/ADMX) wins over the MSI's key, key by key
        for tables; an empty value is unset; an unknown policy value is an error naming the key."""
        self.wine("reg", "add", rf"{POLICY_KEY}\location", "/v", "ROOM", "/t", "REG_SZ", "/d", "999", "/f")
        # An empty value (what older MSIs wrote for a property not given) is read as unset.
        self.wine("reg", "add", rf"{MACHINE_KEY}\location", "/v", "FLR", "/t", "REG_SZ", "/d", "", "/f")
        check(self.reg_values(rf"{MACHINE_KEY}\location").get("FLR") == ("REG_SZ", ""), "an empty FLR value")
        try:
            p = self.agent("trigger", timeout=60)
            event_id = p.stdout.strip().splitlines()[0]
            loc = wait_for("the alarm under GPO policy at the receiver", lambda: self.event_location(event_id), 30)
            check(loc.get("ROOM") == "999" and loc.get("label") == LABEL,
                  "Policies ROOM overrides the MSI's ROOM, the MSI's label stays", loc)
            check("FLR" not in loc, "an empty registry value is read as unset (no FLR in the alarm)", loc)
            self.wine("reg", "add", rf"{POLICY_KEY}\tray", "/v", "hiden_button_label", "/t", "REG_SZ", "/d", "x", "/f")
            bad = self.agent("status", ok=False)
            check(bad.returncode != 0 and "hiden_button_label" in (bad.stdout + bad.stderr)
                  and "Policies" in (bad.stdout + bad.stderr),
                  "an unknown GPO value is an error naming the key and the layer", bad.stdout + bad.stderr)
        finally:
            self.wine("reg", "delete", POLICY_KEY, "/f", ok=False)
            self.wine("reg", "delete", rf"{MACHINE_KEY}\location", "/v", "FLR", "/f", ok=False)

    def hotkey_events(self):
        """Ids of every press with source hotkey the receiver holds (a press may join an open
        incident of the same station, so incidents are not counted)."""
        return {e["id"] for i in self.incidents() for e in i["events"] if e["source"] == "hotkey"}

    def event_location(self, event_id):
        for inc in self.incidents():
            for e in inc["events"]:
                if e["id"] == event_id:
                    # A press joining an open incident: its own location is in events export.
                    for line in self.receiver_cli("events", "export").splitlines():
                        rec = json.loads(line)
                        if rec["id"] == event_id:
                            claims = json.loads(b64url(rec["jws"].split(".")[1]))
                            return claims["location"]
        return None

    def step_autostart_and_tray(self):
        """The Run value the MSI wrote starts the real agent (tray, no subcommand) when Wine's
        session starts (wineboot processes HKLM Run); it writes no per-user Run value (machine-wide
        entry found); it opens no window; it registers its chord with RegisterHotKey (heartbeat
        says registered); an xdotool chord raises an incident with source hotkey."""
        self.run([WINESERVER, "-k"], ok=False)
        self.run([WINESERVER, "-w"], ok=False)
        before = self.hotkey_events()
        hb_before = self.devices()[0].get("last_heartbeat_at")
        # The session start: RunOnce, Run (HKLM, HKCU), Startup. The agent it starts inherits
        # its output, so that goes to a file (a pipe would stay open as long as the agent runs).
        with open(self.tmp / "tray.log", "wb") as out:
            boot = subprocess.run([WINE, "wineboot"], env=self.env, stdout=out, stderr=subprocess.STDOUT, timeout=120)
        check(boot.returncode == 0, f"wineboot exited {boot.returncode}")
        pids = wait_for("the agent started from HKLM Run", self.agent_pids, 30)
        log(f"autostart: HKLM Run started duress-agent.exe (pid {pids[0]})")
        dev = wait_for("a heartbeat from the tray with its chord state",
                       lambda: (d := self.devices()[0]).get("last_heartbeat_at") != hb_before
                       and d.get("hotkey", {}).get("state") != "not_applicable" and d, 90)
        check(dev["hotkey"] == {"state": "registered", "chords": ["Ctrl+Alt+Shift+D"]},
              "RegisterHotKey succeeded for the default chord (heartbeat)", dev["hotkey"])
        hkcu = self.reg_values(rf"HKCU\{RUN_KEY}") or {}
        check("Duress" not in hkcu, "no per-user Run value next to the MSI's machine-wide one", hkcu)
        # Wine has no X tray host here, so its explorer shows the notification icons in a small
        # window of its own: that window appearing proves Shell_NotifyIcon added our icon. Any
        # other window would be the agent's, which must show none.
        windows = wait_for("Wine's system-tray window (the agent's icon)",
                           lambda: (w := self.visible_windows()) and "Wine System Tray" in w and w, 30)
        others = [w for w in windows if w != "Wine System Tray"]
        check(not others, "the tray agent shows no window at start", others)

        # 1. The chord with no Wine window focused (what a user at another app does): the
        #    pointer off every Wine window, so the X server gives the keys to the root window.
        self.xdotool("mousemove", "1000", "700")
        self.xdotool("key", "--clearmodifiers", "ctrl+alt+shift+d")
        time.sleep(5)
        unfocused = bool(self.hotkey_events() - before)
        before = self.hotkey_events()
        if not unfocused:
            lacks("global hotkeys: winex11.drv does not grab a RegisterHotKey chord on the X server "
                  "(no XGrabKey); wineserver matches hotkeys only against key events X delivers to a "
                  "focused Wine window, so a chord pressed while another X client (or none) has the "
                  "focus never reaches the agent")
        # 2. The same chord while a Wine window has the keyboard focus: RegisterHotKey ->
        #    WM_HOTKEY -> global-hotkey -> the agent's chord handler -> the alarm path.
        notepad = subprocess.Popen([WINE, "notepad"], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(notepad)
        win = wait_for("a Wine notepad window", lambda: self.xdotool("search", "--onlyvisible", "--name", "Notepad", ok=False).stdout.split(), 30)
        self.xdotool("windowfocus", "--sync", win[0], ok=False)
        time.sleep(1)
        self.xdotool("key", "--clearmodifiers", "ctrl+alt+shift+d")
        new = wait_for("the alarm raised by the chord (source hotkey)", lambda: self.hotkey_events() - before, 30)
        loc = self.event_location(next(iter(new)))
        check(loc.get("ROOM") == "214", "chord alarm carries the MSI's location", loc)
        log("tray: RegisterHotKey chord delivered through Wine " +
            ("with no Wine window focused" if unfocused else "while a Wine window had the focus"))
        notepad.kill()
        self.kill_agents()

    def visible_windows(self):
        """Visible top-level X windows of Wine processes (the agent must create none)."""
        p = self.xdotool("search", "--onlyvisible", "--name", ".", ok=False)
        names = []
        for w in p.stdout.split():
            n = self.xdotool("getwindowname", w, ok=False).stdout.strip()
            names.append(n)
        return names

    def xdotool(self, *argv, ok=True):
        return self.run(["xdotool", *argv], ok=ok, timeout=30)

    def step_upgrade(self):
        """A higher version installs over the first without properties: one product, the new
        version, every property kept (AppSearch); a property on the command line replaces its
        value."""
        self.wine("msiexec", "/i", winpath(self.args.msi_upgrade), "/qn", "/norestart", "LOCATION_ROOM=215",
                  timeout=180, what="msiexec /i (upgrade)")
        self.expect_machine_values(room="215")
        products = self.duress_products()
        check(len(products) == 1 and products[0][1] == self.args.upgrade_version,
              f"one Duress product, version {self.args.upgrade_version}, after the upgrade", products)
        check(self.drive_c(EXE).read_bytes() == Path(self.args.exe).read_bytes(), "the agent is still installed")
        self.check_task(present=True)
        p = self.agent("trigger", timeout=60)
        event_id = p.stdout.strip().splitlines()[0]
        loc = wait_for("the alarm after the upgrade", lambda: self.event_location(event_id), 30)
        check(loc.get("ROOM") == "215" and loc.get("label") == LABEL,
              "the upgraded agent sends the new room and the kept label", loc)

    def duress_products(self):
        p = self.wine("reg", "query", r"HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall", "/s")
        out = []
        for block in p.stdout.split("\n\n"):
            if "Duress Agent" in block:
                code = block.strip().splitlines()[0].rsplit("\\", 1)[-1]
                m = re.search(r"DisplayVersion\s+REG_SZ\s+(\S+)", block)
                out.append((code, m.group(1) if m else None))
        return out

    def step_uninstall(self):
        """Uninstall by product code: program, Run value, machine configuration and the task
        are gone; the per-user device key stays (user data, like the state database)."""
        products = self.duress_products()
        check(len(products) == 1, "one product to remove", products)
        self.wine("msiexec", "/x", products[0][0], "/qn", "/norestart", timeout=180, what="msiexec /x")
        check(not self.drive_c(EXE).exists(), f"{EXE} removed")
        check(not self.drive_c(INSTALLDIR + r"\WebView2Loader.dll").exists(), "WebView2Loader.dll removed")
        run = self.reg_values(rf"HKLM\{RUN_KEY}") or {}
        check("Duress" not in run, "the HKLM Run value removed", run)
        for sub in (r"receivers\0", "enrollment", "location"):
            check(not self.reg_values(rf"{MACHINE_KEY}\{sub}"), rf"{MACHINE_KEY}\{sub} values removed")
        check(not self.duress_products(), "no Duress product left")
        self.check_task(present=False)


def pe_subsystem(image):
    """The Subsystem field of a PE image's optional header (2 GUI, 3 console)."""
    pe = int.from_bytes(image[0x3C:0x40], "little")
    check(image[pe : pe + 4] == b"PE\0\0", "not a PE image")
    return int.from_bytes(image[pe + 24 + 68 : pe + 24 + 70], "little")


def b64url(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def winpath(p):
    return "Z:" + str(Path(p).resolve()).replace("/", "\\")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def reg_binary(reg_text, key, value):
    """A hex: value of `key` in a `reg export` file (continuation lines joined)."""
    header = re.escape(key)
    m = re.search(r"^\[" + header + r"\][^\n]*\n(.*?)(?=^\[|\Z)", reg_text, re.S | re.M)
    check(m, f"registry key {key} not found in the export", reg_text[:2000])
    body = m.group(1).replace("\\\n", "")
    v = re.search(r'^"' + value + r'"=hex:([0-9a-f, ]*)$', body, re.M)
    check(v, f"value {value} of {key} not found", body)
    return bytes(int(b, 16) for b in v.group(1).replace(" ", "").split(",") if b)


def rc4(key, data):
    s = list(range(256))
    j = 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    i = j = 0
    out = bytearray()
    for b in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(b ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


STEPS = [
    ("prefix", Suite.step_prefix),
    ("install", Suite.step_install),
    ("cli", Suite.step_cli),
    ("queue-and-run", Suite.step_queue_and_run),
    ("policy-precedence", Suite.step_policy_precedence),
    ("autostart-and-tray", Suite.step_autostart_and_tray),
    ("upgrade", Suite.step_upgrade),
    ("uninstall", Suite.step_uninstall),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--msi", required=True)
    ap.add_argument("--msi-upgrade", required=True)
    ap.add_argument("--upgrade-version", required=True)
    ap.add_argument("--exe", required=True, help="the cross-built duress-agent.exe the MSIs carry")
    ap.add_argument("--receiver", required=True)
    ap.add_argument("--bcryptprimitives", required=True, help="the test-only ProcessPrng DLL (Wine 8 has none)")
    ap.add_argument("--keep", action="store_true", help="keep the prefix and logs")
    ap.add_argument("--only", help="comma-separated step names (debugging)")
    args = ap.parse_args()
    for tool, pkg in ((WINE, "wine64"), ("Xvfb", "xvfb"), ("xdotool", "xdotool")):
        if not shutil.which(tool):
            print(f"windows: FAILED: {tool} is missing (apt-get install {pkg}; scripts/install-deps does)", file=sys.stderr)
            return 1
    suite = Suite(args)
    only = set(args.only.split(",")) if args.only else None
    try:
        for name, fn in STEPS:
            if only and name not in only and name != "prefix":
                continue
            t = time.monotonic()
            fn(suite)
            log(f"{name} ok ({time.monotonic() - t:.1f} s)")
    except (Failure, subprocess.TimeoutExpired, json.JSONDecodeError, KeyError, IndexError, OSError) as e:
        print(f"windows: FAILED in step {name}: {e}", file=sys.stderr)
        for f in sorted(suite.tmp.glob("*.log")):
            print(f"--- {f.name} (last 40 lines):", file=sys.stderr)
            print("\n".join(f.read_text(errors="replace").splitlines()[-40:]), file=sys.stderr)
        suite.args.keep = True
        return 1
    finally:
        suite.cleanup()
    log(f"all steps ok in {time.monotonic() - started_at:.0f} s; Wine lacks {len(wine_lacks)} thing(s), listed above")
    return 0


if __name__ == "__main__":
    sys.exit(main())
