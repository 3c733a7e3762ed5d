#!/usr/bin/python3
"""Holds an X11 key grab, like any other application that uses the same global shortcut.

  grab_key.py KEYSYM [MODIFIER...]     e.g.  grab_key.py d control mod1 shift
  grab_key.py KEYCODE [MODIFIER...]    a number: that X keycode (191 = a pedal's F13)

Grabs the key on the root window of $DISPLAY with the modifiers (plus the NumLock/CapsLock
variants), prints "grabbed" and keeps the grab until killed. Needs python3-xlib.
"""
import sys
import time

from Xlib import X, XK, display, error

MODS = {"shift": X.ShiftMask, "control": X.ControlMask, "mod1": X.Mod1Mask, "mod4": X.Mod4Mask}


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    d = display.Display()
    root = d.screen().root
    if argv[1].isdigit():
        keycode = int(argv[1])
    else:
        keycode = d.keysym_to_keycode(XK.string_to_keysym(argv[1]))
    if not keycode:
        print("unknown keysym %s" % argv[1], file=sys.stderr)
        return 2
    mask = 0
    for m in argv[2:]:
        mask |= MODS[m]
    failed = []
    catcher = error.CatchError(error.BadAccess)
    for extra in (0, X.Mod2Mask, X.LockMask, X.Mod2Mask | X.LockMask):
        root.grab_key(keycode, mask | extra, True, X.GrabModeAsync, X.GrabModeAsync, onerror=catcher)
    d.sync()
    if catcher.get_error():
        print("grab failed: already taken", file=sys.stderr)
        return 1
    print("grabbed", flush=True)
    while True:
        while d.pending_events():
            d.next_event()
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
