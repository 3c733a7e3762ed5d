#!/usr/bin/env python3
"""Writes the placeholder app icons (red disc with a white "!") with the stdlib only.
Run from src-tauri/: python3 icons/generate.py"""
import math
import struct
import zlib


def png(size):
    rows = []
    c = (size - 1) / 2
    r = size * 0.45
    for y in range(size):
        row = bytearray([0])
        for x in range(size):
            a = max(0.0, min(1.0, r - math.hypot(x - c, y - c) + 0.5))
            bar = abs(x - c) <= size * 0.06 and (size * 0.22 <= y <= size * 0.60)
            dot = math.hypot(x - c, y - size * 0.74) <= size * 0.07
            col = (255, 255, 255) if (bar or dot) else (200, 16, 32)
            row += bytes([*col, int(a * 255)])
        rows.append(bytes(row))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b""))


imgs = {s: png(s) for s in (16, 32, 128, 256)}
open("icons/32x32.png", "wb").write(imgs[32])
open("icons/128x128.png", "wb").write(imgs[128])
open("icons/icon.png", "wb").write(imgs[256])
# ICO with embedded PNGs (Windows Vista and later).
sizes = [16, 32, 256]
offset = 6 + 16 * len(sizes)
entries, data = b"", b""
for s in sizes:
    d = imgs[s]
    entries += struct.pack("<BBBBHHII", s % 256, s % 256, 0, 0, 1, 32, len(d), offset + len(data))
    data += d
open("icons/icon.ico", "wb").write(struct.pack("<HHH", 0, 1, len(sizes)) + entries + data)
