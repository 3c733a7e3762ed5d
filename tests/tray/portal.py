#!/usr/bin/python3
"""A test xdg-desktop-portal that implements org.freedesktop.portal.GlobalShortcuts as the
specification defines it (https://flatpak.github.io/xdg-desktop-portal/docs/doc-org.freedesktop.portal.GlobalShortcuts.html):
CreateSession / BindShortcuts / ListShortcuts answered through org.freedesktop.portal.Request
objects and their Response signal, the session as an org.freedesktop.portal.Session object,
and the Activated / Deactivated / ShortcutsChanged signals. Owns org.freedesktop.portal.Desktop
on the session bus it is started on. Needs python3-dbus and python3-gi.

  portal.py ASSIGN      ASSIGN is the trigger description the "desktop" gives every shortcut
                        at BindShortcuts ("" = bound to no key, as when the user dismisses the
                        dialog without choosing one)

Commands on stdin, one per line (for the shortcut bound first):
  activate | deactivate | change TRIGGER (ShortcutsChanged with a new trigger, "" for none)
Lines on stdout: "ready", then "bound ID PREFERRED_TRIGGER" after each BindShortcuts, and
"sent COMMAND" after each command.
"""
import sys
import time

import dbus
import dbus.service
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

DESKTOP = "org.freedesktop.portal.Desktop"
PATH = "/org/freedesktop/portal/desktop"
IFACE = "org.freedesktop.portal.GlobalShortcuts"
REQUEST = "org.freedesktop.portal.Request"
SESSION = "org.freedesktop.portal.Session"


def say(line):
    print(line, flush=True)


class Request(dbus.service.Object):
    @dbus.service.signal(REQUEST, signature="ua{sv}")
    def Response(self, response, results):
        pass

    @dbus.service.method(REQUEST, in_signature="", out_signature="")
    def Close(self):
        self.remove_from_connection()


class Session(dbus.service.Object):
    @dbus.service.method(SESSION, in_signature="", out_signature="")
    def Close(self):
        self.Closed({})
        self.remove_from_connection()

    @dbus.service.signal(SESSION, signature="a{sv}")
    def Closed(self, details):
        pass

    @dbus.service.method(dbus.PROPERTIES_IFACE, in_signature="ss", out_signature="v")
    def Get(self, iface, prop):
        return dbus.UInt32(1)


def sender_part(sender):
    return sender.lstrip(":").replace(".", "_")


class Portal(dbus.service.Object):
    def __init__(self, bus, assign):
        self.bus = bus
        self.assign = assign
        self.session = None
        self.shortcuts = []  # [(id, info dict)]
        self.keep = []
        name = dbus.service.BusName(DESKTOP, bus, do_not_queue=True)
        self._name = name
        super().__init__(name, PATH)

    def answer(self, sender, token, results):
        path = "%s/request/%s/%s" % (PATH, sender_part(sender), token)
        req = Request(self.bus, path)
        self.keep.append(req)

        # The Response comes after the method's reply, as from a real portal.
        def respond():
            req.Response(dbus.UInt32(0), results)
            return False

        GLib.timeout_add(30, respond)
        return dbus.ObjectPath(path)

    @dbus.service.method(dbus.PROPERTIES_IFACE, in_signature="ss", out_signature="v")
    def Get(self, iface, prop):
        if iface == IFACE and prop == "version":
            return dbus.UInt32(1)
        raise dbus.exceptions.DBusException(
            "No such property %s.%s" % (iface, prop),
            name="org.freedesktop.DBus.Error.InvalidArgs",
        )

    @dbus.service.method(dbus.PROPERTIES_IFACE, in_signature="s", out_signature="a{sv}")
    def GetAll(self, iface):
        return {"version": dbus.UInt32(1)} if iface == IFACE else {}

    @dbus.service.method(IFACE, in_signature="a{sv}", out_signature="o", sender_keyword="sender")
    def CreateSession(self, options, sender=None):
        spath = "%s/session/%s/%s" % (PATH, sender_part(sender), options["session_handle_token"])
        self.session = Session(self.bus, spath)
        # The specification's `s` (see xdg-desktop-portal#609).
        return self.answer(sender, options["handle_token"], {"session_handle": dbus.String(spath)})

    def wire(self):
        return dbus.Array(
            [dbus.Struct((i, info), signature="sa{sv}") for i, info in self.shortcuts],
            signature="(sa{sv})",
        )

    @dbus.service.method(
        IFACE, in_signature="oa(sa{sv})sa{sv}", out_signature="o", sender_keyword="sender"
    )
    def BindShortcuts(self, session, shortcuts, parent_window, options, sender=None):
        self.shortcuts = []
        for sid, info in shortcuts:
            preferred = str(info.get("preferred_trigger", ""))
            say("bound %s %s" % (sid, preferred))
            self.shortcuts.append(
                (
                    dbus.String(sid),
                    dbus.Dictionary(
                        {
                            "description": dbus.String(info.get("description", "")),
                            "trigger_description": dbus.String(self.assign),
                        },
                        signature="sv",
                    ),
                )
            )
        return self.answer(sender, options["handle_token"], {"shortcuts": self.wire()})

    @dbus.service.method(IFACE, in_signature="oa{sv}", out_signature="o", sender_keyword="sender")
    def ListShortcuts(self, session, options, sender=None):
        return self.answer(sender, options["handle_token"], {"shortcuts": self.wire()})

    @dbus.service.signal(IFACE, signature="osta{sv}")
    def Activated(self, session, shortcut_id, timestamp, options):
        pass

    @dbus.service.signal(IFACE, signature="osta{sv}")
    def Deactivated(self, session, shortcut_id, timestamp, options):
        pass

    @dbus.service.signal(IFACE, signature="oa(sa{sv})")
    def ShortcutsChanged(self, session, shortcuts):
        pass

    def command(self, line):
        words = line.rstrip("\n").split(" ", 1)
        if not self.session or not self.shortcuts:
            say("error no session bound yet")
            return
        spath = dbus.ObjectPath(self.session.__dbus_object_path__)
        sid = self.shortcuts[0][0]
        now = dbus.UInt64(int(time.monotonic() * 1000))
        empty = dbus.Dictionary({}, signature="sv")
        if words[0] == "activate":
            self.Activated(spath, sid, now, empty)
        elif words[0] == "deactivate":
            self.Deactivated(spath, sid, now, empty)
        elif words[0] == "change":
            trigger = words[1] if len(words) > 1 else ""
            for _, info in self.shortcuts:
                info["trigger_description"] = dbus.String(trigger)
            self.ShortcutsChanged(spath, self.wire())
        else:
            say("error unknown command %r" % line)
            return
        say("sent %s" % line.strip())


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    DBusGMainLoop(set_as_default=True)
    bus = dbus.SessionBus()
    portal = Portal(bus, sys.argv[1])
    loop = GLib.MainLoop()

    def on_stdin(source, condition):
        line = sys.stdin.readline()
        if not line:
            loop.quit()
            return False
        portal.command(line)
        return True

    GLib.io_add_watch(sys.stdin, GLib.IO_IN | GLib.IO_HUP, on_stdin)
    say("ready")
    loop.run()


if __name__ == "__main__":
    main()
