#!/usr/bin/python3
"""Presses a key by its X keycode through XTest, as a USB pedal or panic button sends it.

  press_keycode.py [--hold MS] [--shift] KEYCODE

A pedal that sends F13 produces Linux KEY_F13 = X keycode 191 (F24: 202) whatever keysym the
keymap puts there, so the key is named by keycode, not keysym (several of these keycodes carry
no keysym at all under the evdev map, and xdotool names keys by keysym). --shift holds Shift_L
around the press; --hold keeps the key down MS milliseconds. Needs python3-xlib.
"""
import argparse
import sys
import time

from Xlib import X, XK, display
from Xlib.ext import xtest


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hold", type=int, default=30)
    p.add_argument("--shift", action="store_true")
    p.add_argument("keycode", type=int)
    a = p.parse_args()
    d = display.Display()
    if not d.has_extension("XTEST"):
        print("the X server has no XTEST extension", file=sys.stderr)
        return 2
    shift = d.keysym_to_keycode(XK.XK_Shift_L)
    if a.shift:
        xtest.fake_input(d, X.KeyPress, shift)
    xtest.fake_input(d, X.KeyPress, a.keycode)
    d.sync()
    time.sleep(a.hold / 1000.0)
    xtest.fake_input(d, X.KeyRelease, a.keycode)
    if a.shift:
        xtest.fake_input(d, X.KeyRelease, shift)
    d.sync()
    return 0


if __name__ == "__main__":
    sys.exit(main())
