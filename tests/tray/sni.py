#!/usr/bin/python3
"""Tray-menu test helper: a StatusNotifierWatcher stub, and a reader/clicker of an app's
tray menu over D-Bus (com.canonical.dbusmenu). Needs python3-dbus and python3-gi.

  sni.py watcher              own org.kde.StatusNotifierWatcher on the session bus and record
                              registered items (libayatana-appindicator exports its item and
                              menu only while a watcher exists; Xvfb sessions have none)
  sni.py has-watcher          exit 0 when some process owns the watcher name
  sni.py menu PID             print the tray menu of process PID as JSON:
                              [{"id": 3, "label": "Duress: on", "enabled": false, ...}, ...]
                              exit 3 when PID has no registered item (yet)
  sni.py click PID LABEL      send "clicked" to the first item whose label starts with LABEL

Exit codes: 0 ok, 2 usage or D-Bus error, 3 item not (yet) there, 4 no such menu item.
"""
import json
import sys
import time

import dbus

WATCHER = "org.kde.StatusNotifierWatcher"
WATCHER_PATH = "/StatusNotifierWatcher"
ITEM_IFACE = "org.kde.StatusNotifierItem"
MENU_IFACE = "com.canonical.dbusmenu"


def run_watcher():
    import dbus.service
    from dbus.mainloop.glib import DBusGMainLoop
    from gi.repository import GLib

    DBusGMainLoop(set_as_default=True)
    bus = dbus.SessionBus()

    class Watcher(dbus.service.Object):
        def __init__(self):
            self.items = []
            name = dbus.service.BusName(WATCHER, bus, do_not_queue=True)
            super().__init__(name, WATCHER_PATH)
            self._name = name

        @dbus.service.method(WATCHER, in_signature="s", out_signature="", sender_keyword="sender")
        def RegisterStatusNotifierItem(self, service, sender=None):
            # libayatana passes its object path; KDE items pass a bus name.
            entry = sender + service if service.startswith("/") else service
            if entry not in self.items:
                self.items.append(entry)
            self.StatusNotifierItemRegistered(entry)

        @dbus.service.method(WATCHER, in_signature="s", out_signature="")
        def RegisterStatusNotifierHost(self, service):
            pass

        @dbus.service.signal(WATCHER, signature="s")
        def StatusNotifierItemRegistered(self, service):
            pass

        @dbus.service.signal(WATCHER, signature="s")
        def StatusNotifierItemUnregistered(self, service):
            pass

        @dbus.service.signal(WATCHER, signature="")
        def StatusNotifierHostRegistered(self):
            pass

        @dbus.service.method(dbus.PROPERTIES_IFACE, in_signature="ss", out_signature="v")
        def Get(self, iface, prop):
            return self.GetAll(iface)[prop]

        @dbus.service.method(dbus.PROPERTIES_IFACE, in_signature="s", out_signature="a{sv}")
        def GetAll(self, iface):
            return {
                "RegisteredStatusNotifierItems": dbus.Array(self.items, signature="s"),
                "IsStatusNotifierHostRegistered": dbus.Boolean(True),
                "ProtocolVersion": dbus.Int32(0),
            }

    Watcher()
    print("ready", flush=True)
    GLib.MainLoop().run()


def bus_pid(bus, name):
    dbus_obj = bus.get_object("org.freedesktop.DBus", "/org/freedesktop/DBus")
    return int(dbus_obj.GetConnectionUnixProcessID(name, dbus_interface="org.freedesktop.DBus"))


def find_item(bus, pid):
    """(bus name, item path) of the tray item exported by process `pid`, or None."""
    try:
        watcher = bus.get_object(WATCHER, WATCHER_PATH)
        items = watcher.Get(WATCHER, "RegisteredStatusNotifierItems",
                            dbus_interface=dbus.PROPERTIES_IFACE)
    except dbus.DBusException:
        return None
    for entry in items:
        entry = str(entry)
        if "/" in entry:
            name, path = entry[: entry.index("/")], entry[entry.index("/"):]
        else:
            name, path = entry, "/StatusNotifierItem"
        try:
            if bus_pid(bus, name) == pid:
                return name, path
        except dbus.DBusException:
            continue
    return None


def unmnemonic(label):
    out, i = [], 0
    while i < len(label):
        c = label[i]
        if c == "_" and i + 1 < len(label):
            out.append(label[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def read_menu(bus, pid):
    found = find_item(bus, pid)
    if found is None:
        return None
    name, path = found
    item = bus.get_object(name, path)
    menu_path = item.Get(ITEM_IFACE, "Menu", dbus_interface=dbus.PROPERTIES_IFACE)
    menu = bus.get_object(name, menu_path)
    _rev, layout = menu.GetLayout(0, -1, dbus.Array([], signature="s"), dbus_interface=MENU_IFACE)
    entries = []

    def walk(node):
        item_id, props, children = node
        for child in children:
            cid, cprops, cchildren = child
            entries.append({
                "id": int(cid),
                "label": unmnemonic(str(cprops.get("label", ""))),
                "enabled": bool(cprops.get("enabled", True)),
                "visible": bool(cprops.get("visible", True)),
                "type": str(cprops.get("type", "standard")),
            })
            walk(child)

    walk(layout)
    return name, menu_path, entries


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd = argv[1]
    if cmd == "watcher":
        run_watcher()
        return 0
    bus = dbus.SessionBus()
    if cmd == "has-watcher":
        dbus_obj = bus.get_object("org.freedesktop.DBus", "/org/freedesktop/DBus")
        return 0 if dbus_obj.NameHasOwner(WATCHER, dbus_interface="org.freedesktop.DBus") else 1
    if cmd in ("menu", "click") and len(argv) >= 3:
        pid = int(argv[2])
        try:
            got = read_menu(bus, pid)
        except dbus.DBusException as e:
            print("D-Bus error: %s" % e, file=sys.stderr)
            return 3
        if got is None:
            print("no tray item registered by pid %d" % pid, file=sys.stderr)
            return 3
        name, menu_path, entries = got
        if cmd == "menu":
            print(json.dumps([e for e in entries if e["type"] != "separator"]))
            return 0
        prefix = argv[3] if len(argv) >= 4 else ""
        for e in entries:
            if e["type"] != "separator" and e["label"].startswith(prefix):
                menu = bus.get_object(name, menu_path)
                menu.Event(dbus.Int32(e["id"]), "clicked", dbus.Int32(0, variant_level=1),
                           dbus.UInt32(int(time.time())), dbus_interface=MENU_IFACE)
                print(json.dumps(e))
                return 0
        print("no menu item labelled %r" % prefix, file=sys.stderr)
        return 4
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
