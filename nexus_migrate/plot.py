"""A small PNG chart of insert latency over time, written with zlib and struct
alone: a 5x7 bitmap font, log-scale y axis, shaded apply windows. It saves the
project a plotting library for one picture."""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, field

# 5x7 glyphs, one 5-bit row per entry, top to bottom (16 = leftmost pixel).
FONT = {
    "0": [14, 17, 19, 21, 25, 17, 14], "1": [4, 12, 4, 4, 4, 4, 14], "2": [14, 17, 1, 2, 4, 8, 31],
    "3": [31, 2, 4, 2, 1, 17, 14], "4": [2, 6, 10, 18, 31, 2, 2], "5": [31, 16, 30, 1, 1, 17, 14],
    "6": [6, 8, 16, 30, 17, 17, 14], "7": [31, 1, 2, 4, 8, 8, 8], "8": [14, 17, 17, 14, 17, 17, 14],
    "9": [14, 17, 17, 15, 1, 2, 12],
    "a": [0, 0, 14, 1, 15, 17, 15], "b": [16, 16, 22, 25, 17, 17, 30], "c": [0, 0, 14, 16, 16, 17, 14],
    "d": [1, 1, 13, 19, 17, 17, 15], "e": [0, 0, 14, 17, 31, 16, 14], "f": [6, 9, 8, 28, 8, 8, 8],
    "g": [0, 15, 17, 17, 15, 1, 14], "h": [16, 16, 22, 25, 17, 17, 17], "i": [4, 0, 12, 4, 4, 4, 14],
    "j": [2, 0, 6, 2, 2, 18, 12], "k": [16, 16, 18, 20, 24, 20, 18], "l": [12, 4, 4, 4, 4, 4, 14],
    "m": [0, 0, 26, 21, 21, 17, 17], "n": [0, 0, 22, 25, 17, 17, 17], "o": [0, 0, 14, 17, 17, 17, 14],
    "p": [0, 0, 30, 17, 30, 16, 16], "q": [0, 0, 13, 19, 15, 1, 1], "r": [0, 0, 22, 25, 16, 16, 16],
    "s": [0, 0, 14, 16, 14, 1, 30], "t": [8, 8, 28, 8, 8, 9, 6], "u": [0, 0, 17, 17, 17, 19, 13],
    "v": [0, 0, 17, 17, 17, 10, 4], "w": [0, 0, 17, 17, 21, 21, 10], "x": [0, 0, 17, 10, 4, 10, 17],
    "y": [0, 0, 17, 17, 15, 1, 14], "z": [0, 0, 31, 2, 4, 8, 31],
    " ": [0] * 7, ".": [0, 0, 0, 0, 0, 12, 12], ",": [0, 0, 0, 0, 12, 4, 8], ":": [0, 12, 12, 0, 12, 12, 0],
    "-": [0, 0, 0, 31, 0, 0, 0], "(": [2, 4, 8, 8, 8, 4, 2], ")": [8, 4, 2, 2, 2, 4, 8],
    "/": [0, 1, 2, 4, 8, 16, 0], "=": [0, 0, 31, 0, 31, 0, 0], "%": [24, 25, 2, 4, 8, 19, 3],
}
WHITE, BLACK, GREY, LIGHT = (255, 255, 255), (0, 0, 0), (150, 150, 150), (228, 228, 228)
RED = (200, 30, 30)


class Canvas:
    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.pixels = bytearray(WHITE * (width * height))

    def dot(self, x: int, y: int, color, size: int = 1) -> None:
        for yy in range(y, y + size):
            for xx in range(x, x + size):
                if 0 <= xx < self.width and 0 <= yy < self.height:
                    i = 3 * (yy * self.width + xx)
                    self.pixels[i:i + 3] = bytes(color)

    def rect(self, x0: int, y0: int, x1: int, y1: int, color) -> None:
        for y in range(max(0, y0), min(self.height, y1)):
            i, j = 3 * (y * self.width + max(0, x0)), 3 * (y * self.width + min(self.width, x1))
            if j > i:
                self.pixels[i:j] = bytes(color) * ((j - i) // 3)

    def text(self, x: int, y: int, text: str, color=BLACK, scale: int = 2) -> None:
        for n, char in enumerate(text.lower()):
            for row, bits in enumerate(FONT.get(char, FONT[" "])):
                for col in range(5):
                    if bits & (16 >> col):
                        self.dot(x + (6 * n + col) * scale, y + row * scale, color, scale)

    def png(self) -> bytes:
        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

        stride = 3 * self.width
        raw = b"".join(b"\x00" + bytes(self.pixels[y * stride:(y + 1) * stride]) for y in range(self.height))
        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)  # 8-bit RGB
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


@dataclass
class Panel:
    title: str
    color: tuple
    points: list = field(default_factory=list)   # (seconds, latency ms, ok)
    windows: list = field(default_factory=list)  # (start s, end s, label)


def _nice_step(span: float, ticks: int = 8) -> float:
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def latency_chart(panels: list[Panel], width: int = 1200, panel_height: int = 300) -> bytes:
    """One panel per run, stacked, sharing a log-scale latency axis."""
    left, right, top, bottom = 110, 20, 40, 40
    canvas = Canvas(width, len(panels) * panel_height)
    highest = max([p[1] for panel in panels for p in panel.points] + [10.0])
    y_top = 10 ** math.ceil(math.log10(highest))
    y_bottom = 0.1
    for n, panel in enumerate(panels):
        x0, x1 = left, width - right
        y0, y1 = n * panel_height + top, (n + 1) * panel_height - bottom
        span = max([p[0] for p in panel.points] + [w[1] for w in panel.windows] + [1.0])

        def px(seconds: float) -> int:
            return x0 + round((x1 - x0) * seconds / span)

        def py(ms: float) -> int:
            ms = min(max(ms, y_bottom), y_top)
            return y1 - round((y1 - y0) * math.log10(ms / y_bottom) / math.log10(y_top / y_bottom))

        for start, end, label in panel.windows:
            canvas.rect(px(start), y0, max(px(end), px(start) + 1), y1, LIGHT)
            canvas.text(px(start) + 4, y0 + 4, label, GREY)
        canvas.text(x0, y0 - 28, panel.title, panel.color)
        decade = y_bottom
        while decade <= y_top * 1.001:
            y = py(decade)
            canvas.rect(x0, y, x1, y + 1, LIGHT if decade not in (y_bottom, y_top) else GREY)
            label = f"{decade:g} ms"
            canvas.text(x0 - 10 - 12 * len(label), y - 7, label)
            decade *= 10
        step = _nice_step(span)
        tick = 0.0
        while tick <= span + 1e-9:
            canvas.rect(px(tick), y1, px(tick) + 1, y1 + 5, BLACK)
            label = f"{tick:g} s"
            canvas.text(px(tick) - 6 * len(label), y1 + 10, label)
            tick += step
        canvas.rect(x0, y0, x0 + 1, y1, BLACK)
        canvas.rect(x0, y1, x1, y1 + 1, BLACK)
        for seconds, ms, ok in panel.points:
            if ok:
                canvas.dot(px(seconds) - 1, py(ms) - 1, panel.color, 3)
            else:
                canvas.text(px(seconds) - 5, y0 + 2, "x", RED)
    return canvas.png()
